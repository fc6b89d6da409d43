"""HTTP metrics: `opencbr_http_requests_total` and `opencbr_http_request_duration_seconds`,
labelled by the route's template (`/v3/{project_id}/vaults/{vault_id}`), never the raw
path, which carries project and resource ids."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencbr import metrics

# A path no route matched: one label, whatever the path was.
UNMATCHED_ROUTE = "unmatched"
# Methods a client may send are unbounded; anything else is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetricsMiddleware:
    """Counts and times every HTTP request (outermost: the time includes the other
    middleware); a request that raised is counted with status 500."""

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
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            route = route_template(scope)
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_REQUEST_DURATION.labels(method, route).observe(
                time.perf_counter() - started
            )


def route_template(scope: Scope) -> str:
    """The template of the route the router matched (it records the route in the scope)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
