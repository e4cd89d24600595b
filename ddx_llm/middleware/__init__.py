"""Middleware composition: the specs plugins contribute and the chain built from them.

Every middleware is pure ASGI.  Plugins return :class:`MiddlewareSpec` from the
``ddx_llm_middleware`` hook; the core adds its own layers (:data:`CORE_LAYERS`), sorts all by
``order`` (lowest is outermost) and wraps the router.  Two layers with one order or one name stop
start-up naming both and the plugins that contributed them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp

from ..config import ConfigError

logger = logging.getLogger(__name__)

CORE = "core"


@dataclass(frozen=True)
class MiddlewareSpec:
    """A middleware offered by a plugin.

    Attributes:
        name: shown in the start-up log and ``ddx-llm plugins``; unique.
        order: position, lowest outermost.  Ties are an error (the order must be explicit).
        factory: ``factory(app) -> app`` wrapping the inner ASGI app.
        plugin: who contributed it (filled in by the core).
    """

    name: str
    order: int
    factory: Callable[[ASGIApp], ASGIApp]
    plugin: str | None = None

    def label(self) -> str:
        return f"{self.name}({self.order})"


def check_order(specs: list[MiddlewareSpec]) -> list[MiddlewareSpec]:
    """``specs`` sorted outermost first; a shared name or order is a ConfigError naming both."""
    ordered = sorted(specs, key=lambda spec: spec.order)
    for attr in ("name", "order"):
        seen: dict[object, MiddlewareSpec] = {}
        for spec in ordered:
            other = seen.setdefault(getattr(spec, attr), spec)
            if other is not spec:
                raise ConfigError(
                    f"middleware {other.name!r} (plugin {other.plugin}) and {spec.name!r} "
                    f"(plugin {spec.plugin}) share the {attr} {getattr(spec, attr)!r}; "
                    "each middleware needs its own name and order"
                )
    return ordered


def build_chain(app: ASGIApp, specs: list[MiddlewareSpec]) -> ASGIApp:
    """Wrap ``app`` so that ``specs[0]`` is outermost."""
    for spec in reversed(specs):
        app = spec.factory(app)
    logger.info(
        "middleware order (outermost first): %s",
        " -> ".join(spec.label() for spec in specs) or "(none)",
    )
    return app
