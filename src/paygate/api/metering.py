"""HTTP metrics: a pure ASGI middleware around the whole app (the edge included, so that its
own answers, such as 431 or a timeout's 503, are counted too). Requests are labelled with the
route template (`/v1/payments/{payment_id}`), never the path: an id in a label would make a new
time series per object."""

from __future__ import annotations

import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paygate.platform import metrics

UNMATCHED = "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # an exception before the answer started is answered 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            seconds = time.perf_counter() - started
            metrics.http_request(scope["method"], route_of(scope, root_path), status, seconds)
            metrics.sample_pools(min_interval_s=1.0)


def route_of(scope: Scope, root_path: str = "") -> str:
    """The template of the route that answered: the router leaves it in the scope; a mounted
    app's routes get the mount's prefix (its part of `root_path`)."""
    route = scope.get("route")
    if isinstance(route, Mount):  # the mounted app had no route for the path
        return UNMATCHED
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    mounted = scope.get("root_path", "")
    prefix = mounted[len(root_path) :] if mounted.startswith(root_path) else ""
    return prefix + template
