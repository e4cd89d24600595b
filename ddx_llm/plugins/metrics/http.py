"""The HTTP half of the metrics plugin: a pure-ASGI middleware counting and timing requests.

It sits inside CORS and outside the core's error layer, so the status it counts is the one the
client got, error mapping included.  A request's duration ends with the last body message, so a
stream is timed until its ``[DONE]``.  A client that leaves is counted as 499 (nginx's "client
closed request"), never as a server error: the core answers 499 ``client_closed`` when the client
left while its body was read, and a request that sent nothing after its client left counts 499
too.

Labels stay bounded: ``route`` is the route *template* the app matched
(:func:`ddx_llm.routing.matched_route`: ``/v1/models/{id}``, never the raw path; ``unmatched``
when no route matches); ``method`` is one of the standard methods or ``other``.  Since they
are bounded, the labelled children of the two series are looked up once per label set and kept
(prometheus-client's ``labels()`` costs more than the increment itself).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ddx_llm.routing import matched_route

from .series import MetricsCollector

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NOTHING_SENT = 500
"""The status when the app sent nothing: the server answers 500 for an error that escaped."""
CLIENT_CLOSED = 499
"""The status when the app sent nothing because the client had left."""


class MetricsMiddleware:
    """Count and time every HTTP request into ``collector``; other scopes pass through."""

    def __init__(self, app: ASGIApp, collector: MetricsCollector) -> None:
        self.app = app
        self.collector = collector
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request, as :meth:`MetricsCollector.observe_http` does, through
        the children kept for its labels."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            collector = self.collector
            children = self._children[key] = (
                collector.requests.labels(route, method, str(status)),
                collector.request_duration.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = matched_route(scope).template
        method = method_label(scope["method"])
        status: int | None = None
        recorded = False
        left = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            self.collector.in_flight.dec()
            unanswered = CLIENT_CLOSED if left else NOTHING_SENT
            self.observe(route, method, status or unanswered, time.perf_counter() - started)

        async def observing_receive() -> Message:
            nonlocal left
            message = await receive()
            left = left or message["type"] == "http.disconnect"
            return message

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
            await self.app(scope, observing_receive, observing_send)
        finally:
            record()  # no final body: the client left, or the app failed


def method_label(method: str) -> str:
    return method if method in METHODS else "other"
