"""The lazily built ASGI entry point.

Hypercorn resolves ``ddx_llm:app`` with ``eval`` on the module's namespace, so ``app`` must be a
real object at import time; a module ``__getattr__`` would never be consulted.  :class:`LazyApp`
is that object: it builds the configured app on its first call (normally the lifespan start-up)
and reports a configuration error as a failed start-up, with the message, instead of a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

logger = logging.getLogger("ddx_llm")


class LazyApp:
    """An ASGI callable that builds the real app with ``factory()`` on first use."""

    def __init__(self, factory: Callable[[], Any] | None = None) -> None:
        self._factory = factory
        self._app: Any = None

    @property
    def built(self) -> Any:
        """The built app (None before the first call)."""
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = self._build()
            except Exception as exc:
                if scope["type"] != "lifespan":
                    raise
                logger.error("start-up failed: %s", exc)
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
        await self._app(scope, receive, send)

    def _build(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from .app import create_app

        return create_app()
