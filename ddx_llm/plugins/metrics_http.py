"""The HTTP half of the metrics plugin: a pure-ASGI middleware and bounded route labels.

The middleware sits at order 300: inside CORS, outside the errors plugin (400), so the status it
counts is the one the client got, error mapping included.  A request's duration ends with the
last body message, so a stream is timed until its ``[DONE]``.

Labels stay bounded: ``route`` is the route *template* (``/v1/models/{id}``, never the raw path),
``unmatched`` when no route matches; ``method`` is one of the standard methods or ``other``.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics_collector import MetricsCollector

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Count and time every HTTP request into ``collector``; other scopes pass through."""

    def __init__(self, app: ASGIApp, collector: MetricsCollector) -> None:
        self.app = app
        self.collector = collector
        self.router = find_router(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # What routing needs, kept before inner layers and the router mutate the scope.
        request = {
            "type": "http",
            "method": scope["method"],
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
        }
        status: int | None = None
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            self.collector.in_flight.dec()
            self.collector.observe_http(
                self.route_label(scope, request),
                method_label(request["method"]),
                status or 500,  # nothing was sent: the server answers 500 for an escaped error
                time.perf_counter() - started,
            )

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte goes out, so a client that has its answer
                # already finds it in the next scrape.
                record()
            await send(message)

        self.collector.in_flight.inc()
        try:
            await self.app(scope, receive, observing_send)
        finally:
            record()  # no final body: the client left, or the app failed

    def route_label(self, scope: Scope, request: dict[str, Any]) -> str:
        """The template of the route that served (or would serve) the request.

        Starlette's router stores the matched route in ``scope["route"]``, in the same scope
        object this middleware holds, when it ran.  When it did not (auth answered 401, the body
        was too large) or the route sits under a Mount, the template is found by matching the
        request against the router's routes, as the router does.
        """
        route = scope.get("route")
        router = scope.get("router") or self.router
        if router is None:
            return getattr(route, "path", None) or UNMATCHED
        if route is not None and any(candidate is route for candidate in router.routes):
            return getattr(route, "path", None) or UNMATCHED
        return match_template(router.routes, request) or UNMATCHED


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def match_template(routes: list[BaseRoute], scope: dict[str, Any]) -> str | None:
    """The template of the first route matching ``scope`` (a method mismatch counts, as for
    Starlette's 405), joined through Mounts; None when nothing matches."""
    partial: str | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            if isinstance(route, Mount):
                if not route.routes:  # an arbitrary ASGI app: its paths are not ours to list
                    return route.path_format
                inner = match_template(route.routes, {**scope, **child})
                return route.path + inner if inner else None
            return getattr(route, "path", None)
        if match is Match.PARTIAL and partial is None:
            partial = getattr(route, "path", None)
    return partial


def find_router(app: Any) -> Router | None:
    """The Starlette router at the end of the middleware chain below ``app``.

    Follows the ``.app`` attribute that Starlette-style middleware keep; None if a layer hides
    it (the route label then comes from ``scope["route"]`` alone).
    """
    for _ in range(64):
        if isinstance(app, Router):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
