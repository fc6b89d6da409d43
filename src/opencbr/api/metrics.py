"""HTTP metrics and the access log, from one observation of each request.

Metrics: `opencbr_http_requests_total` and `opencbr_http_request_duration_seconds`,
labelled by the route's template (`/v3/{project_id}/vaults/{vault_id}`), never the raw
path, which carries project and resource ids.

Access log: one line per request (logger `opencbr.access`, event `request`): method, route
template, status, duration in ms, request id and the path's project id. Never the raw
path, the query string or any header: credentials travel in headers (X-Auth-Token,
Authorization) and signed queries, and none of them is ever read here.
"""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencbr import metrics

# Its own logger name, so an operator can route or filter the access log as a whole.
access_log = structlog.get_logger("opencbr.access")

# A path no route matched: one label, whatever the path was.
UNMATCHED_ROUTE = "unmatched"
# Methods a client may send are unbounded; anything else is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetricsMiddleware:
    """Counts, times and logs every HTTP request (outermost: the time includes the other
    middleware); a request that raised is counted and logged with status 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            route = route_template(scope)
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_REQUEST_DURATION.labels(method, route).observe(seconds)
            log_request(scope, method, route, status, seconds)


def log_request(scope: Scope, method: str, route: str, status: int, seconds: float) -> None:
    """The access-log line of a finished request. The request id and the project id are
    what the inner layers left in the shared scope (the request-id middleware's state,
    the router's path parameters)."""
    state = scope.get("state") or {}
    project_id = (scope.get("path_params") or {}).get("project_id")
    where = {"project_id": project_id} if project_id else {}  # routes without one: none
    access_log.info(
        "request",
        method=method,
        route=route,
        status=status,
        duration_ms=round(seconds * 1000, 1),
        request_id=state.get("request_id"),
        **where,
    )


def route_template(scope: Scope) -> str:
    """The template of the route the router matched (it records the route in the scope)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
