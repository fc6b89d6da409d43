"""The one place where errors become HTTP responses: `{"error_code", "error_msg"}`."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from opencbr.errors import (
    API_NOT_FOUND,
    INTERNAL_ERROR,
    INVALID_PARAMETER,
    UNAUTHORIZED,
    CbrError,
    ErrorCode,
)
from opencbr.logs import mark_logged

log = structlog.get_logger(__name__)


def error_response(error: ErrorCode, message: str, request: Request) -> JSONResponse:
    body: dict[str, object] = {"error_code": error.code, "error_msg": message}
    if request.url.path.startswith("/identity"):
        # keystoneauth reads Keystone's own shape; the Huawei SDK reads error_code/error_msg.
        title = "Unauthorized" if error.status == 401 else "Error"
        body["error"] = {"code": error.status, "title": title, "message": message}
    if error is UNAUTHORIZED:
        body["request_id"] = getattr(request.state, "request_id", "")
    return JSONResponse(body, status_code=error.status)


def _describe(exc: RequestValidationError) -> str:
    problems = []
    for problem in exc.errors()[:5]:
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {problem.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(problems)


async def _on_cbr_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CbrError)
    return error_response(exc.error, exc.detail, request)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(INVALID_PARAMETER, _describe(exc), request)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):
        return error_response(API_NOT_FOUND, API_NOT_FOUND.message, request)
    error = ErrorCode(INVALID_PARAMETER.code, exc.status_code, str(exc.detail))
    return error_response(error, str(exc.detail), request)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The one report of this exception: Starlette re-raises it after this answer and the
    # server would log it again, so it is marked as written (opencbr.logs drops the copy).
    # Method, path and request id only: headers and bodies hold tokens and passwords.
    log.error(
        "unexpected error",
        method=request.method,
        path=request.url.path,
        request_id=getattr(request.state, "request_id", ""),
        exc_info=exc,
    )
    mark_logged(exc)
    return error_response(INTERNAL_ERROR, INTERNAL_ERROR.message, request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CbrError, _on_cbr_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
