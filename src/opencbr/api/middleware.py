"""ASGI middleware: a request id on every response, a cap on request body size, and no NUL
characters in paths, query strings or JSON bodies."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

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
    """Refuse bodies over `limit` bytes with 413 `APIGW.0201` before they reach a handler.

    A declared `Content-Length` is checked up front; a chunked body is counted as it
    arrives. Reading past the limit raises inside the handler's body read, which FastAPI
    turns into its own 400: that answer is dropped and the 413 sent in its place.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _refuse(scope, send)
            return
        seen = 0
        exceeded = started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise _TooLarge
            return message

        async def send_unless_exceeded(message: Message) -> None:
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):  # the 413 below answers it
            await self.app(scope, counting_receive, send_unless_exceeded)
        if exceeded and not started:
            await _refuse(scope, send)


NUL_MESSAGE = "Parameter verification failed: NUL characters are not allowed."


class NulRefusalMiddleware:
    """Refuse NUL in a path, a query string or a JSON body with 400 `BackupService.9900`.

    No id, filter, name or path can contain it, and PostgreSQL refuses it in any text
    parameter: a lookup of `/vaults/%00` and a token request with NUL in a JSON string
    reached the database and answered 500 there; the file system refuses it in paths.
    Refusing it here covers every route, identity's included. It runs inside the body
    limit, so the body it buffers is bounded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _refuse(scope, send, INVALID_PARAMETER, NUL_MESSAGE)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before its body was complete: no one to answer
        if _holds_nul(body):
            await _refuse(scope, send, INVALID_PARAMETER, NUL_MESSAGE)
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the buffered body once, then whatever the client sends next
    (its disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _holds_nul(body: bytes) -> bool:
    """Whether a body holds NUL: as a JSON string's character (escaped `\\u0000`, or raw in
    UTF-16/32 JSON), or as a raw byte of a body that is not JSON at all."""
    if b"\\u0000" not in body and b"\x00" not in body:
        return False  # the cheap test: every request without NUL stops here
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return b"\x00" in body
    return _strings_hold_nul(document)


def _strings_hold_nul(document: Any) -> bool:
    # A loop, not recursion: json.loads accepts nesting deeper than a recursive walk could.
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str) and "\x00" in value:
            return True
        if isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
    return False


async def _refuse(
    scope: Scope, send: Send, error: ErrorCode = ENTITY_TOO_LARGE, message: str = ""
) -> None:
    """Answer `error` as api/errors.py would, before any route is chosen."""
    text = message or error.message
    content: dict[str, object] = {"error_code": error.code, "error_msg": text}
    if scope["path"].startswith("/identity"):
        # keystoneauth reads Keystone's own shape there (as api/errors.error_response gives).
        content["error"] = {"code": error.status, "title": "Error", "message": text}
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(content).encode()})
