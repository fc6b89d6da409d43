"""AK/SK request signatures (Huawei SDK ``SDK-HMAC-SHA256``) as an authentication method.

``deps`` calls :func:`verify_signature` (installed as ``app.state.verify_signature``) for
requests whose ``Authorization`` starts with ``SDK-``. The signature is checked over the
request exactly as it arrived: the raw ASGI path, query string and header bytes and the body
bytes, never FastAPI's decoded views of them.

The ``Host`` header is signed, but not compared with a list of our own names: one listener
serves every region under whatever names and proxies reach it, so no list would be both
complete and right. The region is chosen by the project in the (signed) path instead.
"""

from __future__ import annotations

import structlog
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from opencbr import clock
from opencbr.db.session import Database
from opencbr.errors import UNAUTHORIZED, WRONG_PROJECT, CbrError
from opencbr.services import credentials
from opencbr.services.credentials import SIGNATURE_FAILED
from opencbr.services.identity import AuthContext
from opencbr.settings import Settings
from opencbr.signing import SignatureError, verify_request

log = structlog.get_logger(__name__)


async def verify_signature(
    request: Request, db: Database, require_project: bool = True
) -> AuthContext:
    """The caller of a signed request, in the project of ``X-Project-Id`` or the path.

    Raises UNAUTHORIZED (401) for an unknown or inactive key, a bad or stale signature or
    any tampering; WRONG_PROJECT (403) when ``X-Project-Id`` differs from the path's project
    or the key's user holds no role in the project. With ``require_project=False`` a request
    naming no project yields a context without one.
    """
    body = await request.body()
    settings: Settings = request.app.state.settings
    return await run_in_threadpool(_verify, request, db, settings, body, require_project)


def _verify(
    request: Request, db: Database, settings: Settings, body: bytes, require_project: bool
) -> AuthContext:
    if "x-security-token" in request.headers:
        raise CbrError(
            UNAUTHORIZED, f"{SIGNATURE_FAILED}: temporary keys (X-Security-Token) are not supported"
        )
    access = _verified_access(request, db, settings, body)
    project_id = _project_of(request)
    if project_id is None and require_project:
        raise CbrError(UNAUTHORIZED, f"{SIGNATURE_FAILED}: X-Project-Id not found")
    return credentials.context_for_key(db, access, project_id)


def _verified_access(request: Request, db: Database, settings: Settings, body: bytes) -> str:
    scope = request.scope
    box = credentials.secret_box(settings)
    try:
        return verify_request(
            scope["method"],
            _text(scope.get("raw_path") or scope["path"].encode(), "path"),
            _text(scope["query_string"], "query"),
            scope["headers"],
            body,
            lambda access: credentials.find_secret(db, box, access),
            clock.now(),
        )
    except SignatureError as exc:
        log.info("signature refused", path=scope["path"], reason=exc.reason)
        raise CbrError(UNAUTHORIZED, f"{SIGNATURE_FAILED}: {exc.reason}") from None


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CbrError(UNAUTHORIZED, f"{SIGNATURE_FAILED}: the {where} is not UTF-8") from None


def _project_of(request: Request) -> str | None:
    """X-Project-Id (signed whenever present, see opencbr.signing), or the path's project."""
    header = request.headers.get("x-project-id")
    in_path = request.path_params.get("project_id")
    if header is not None and in_path is not None and header != in_path:
        raise CbrError(WRONG_PROJECT, "X-Project-Id does not match the project in the path.")
    project: str | None = header or in_path
    return project
