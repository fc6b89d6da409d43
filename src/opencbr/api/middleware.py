"""ASGI middleware: a request id on every response, a cap on request body size, and no NUL
characters in paths or query strings."""

from __future__ import annotations

import json
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencbr.errors import ENTITY_TOO_LARGE, INVALID_PARAMETER, ErrorCode


class RequestIdMiddleware:
    """Every response carries `X-Request-Id` (the Huawei SDK copies it into exceptions)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req-{uuid.uuid4()}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse bodies over `limit` bytes with 413 before they reach a handler."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _refuse(send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await _refuse(send)


class NulRefusalMiddleware:
    """Refuse a path or query string holding NUL with 400 `BackupService.9900`.

    No id or filter can contain it, and PostgreSQL refuses it in any text parameter: a
    lookup of `/vaults/%00` reached the database and answered 500 there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            await _refuse(send, INVALID_PARAMETER)
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, error: ErrorCode = ENTITY_TOO_LARGE) -> None:
    body = json.dumps({"error_code": error.code, "error_msg": error.message})
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
