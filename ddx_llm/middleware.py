"""Middleware composition: the specs plugins contribute and the chain built from them.

Every middleware is pure ASGI.  Plugins return :class:`MiddlewareSpec` from the
``ddx_llm_middleware`` hook; the core sorts them by ``order`` (lowest is outermost) and wraps the
router.  Built-in positions: request_id 100, cors 200, metrics 300, errors 400, auth 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import RequestTooLarge

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiddlewareSpec:
    """A middleware offered by a plugin.

    Attributes:
        name: shown in the start-up log and ``ddx-llm plugins``; unique.
        order: position, lowest outermost.  Ties are an error (the order must be explicit).
        factory: ``factory(app) -> app`` wrapping the inner ASGI app.
    """

    name: str
    order: int
    factory: Callable[[ASGIApp], ASGIApp]


def flatten_specs(
    results: Iterable[MiddlewareSpec | list[MiddlewareSpec] | None],
) -> list[MiddlewareSpec]:
    """Flatten hook results and sort them outermost first; reject duplicate names or orders."""
    specs: list[MiddlewareSpec] = []
    for result in results:
        if result is None:
            continue
        specs.extend(result if isinstance(result, list) else [result])
    specs.sort(key=lambda spec: spec.order)
    for seen, attr in ((set(), "name"), (set(), "order")):
        for spec in specs:
            value = getattr(spec, attr)
            if value in seen:
                raise ValueError(f"two middleware share the {attr} {value!r}; each must be unique")
            seen.add(value)
    return specs


def build_chain(app: ASGIApp, specs: list[MiddlewareSpec]) -> ASGIApp:
    """Wrap ``app`` so that ``specs[0]`` is outermost."""
    for spec in reversed(specs):
        app = spec.factory(app)
    logger.info(
        "middleware order (outermost first): %s",
        " -> ".join(f"{s.name}({s.order})" for s in specs) or "(none)",
    )
    return app


def route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without the ``root_path`` mount prefix.

    Mirrors Starlette's own (private) ``get_route_path``, so middleware that decides by path
    (auth, rate limits, proxies) sees exactly what the router will route.
    """
    path, root = scope["path"], scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with :class:`RequestTooLarge` (413).

    Checks ``Content-Length`` up front and counts the bytes actually received, so chunked
    bodies without a length are bounded too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                raise self._too_large()
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            "request body too large", detail=f"the limit is {self.max_bytes} bytes"
        )
