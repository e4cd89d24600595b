"""The ASGI entry point Hypercorn serves: :class:`LazyApp`, built on its first call.

Hypercorn resolves ``ddx_llm:app`` with ``eval`` on the module's namespace, so ``app`` must be a
real object at import time; a module ``__getattr__`` would never be consulted.  :class:`LazyApp`
is that object: it builds the configured app on its first call (normally the lifespan start-up),
so importing ``ddx_llm`` stays cheap and side-effect free.

A start-up failure — the app cannot be built (bad configuration, a broken plugin) or a plugin's
lifespan fails — is reported as ``lifespan.startup.failed`` with one clear message, kept in
:attr:`LazyApp.startup_error`, and signalled through :meth:`LazyApp.wait_failed` (``ddx-llm
serve`` then stops the server and exits non-zero).  Hypercorn's asyncio worker may go on
serving after a failed lifespan (it checks the lifespan task before it has finished); every HTTP
request then gets 503 ``model_unavailable`` naming the failure instead of a half-started app.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from .errors import ModelUnavailable, leaf_exception

logger = logging.getLogger("ddx_llm")


class LazyApp:
    """An ASGI callable that builds the real app with ``factory()`` on first use."""

    def __init__(self, factory: Callable[[], Any] | None = None) -> None:
        self._factory = factory
        self._app: Any = None
        self.startup_error: str | None = None
        """Why start-up failed, once it has."""
        self._failed: anyio.Event | None = None

    @property
    def built(self) -> Any:
        """The built app (None before the first call)."""
        return self._app

    async def wait_failed(self) -> None:
        """Return once start-up has failed (never, when it succeeds)."""
        if self._failed is None:
            self._failed = anyio.Event()
        if self.startup_error is not None:
            self._failed.set()
        await self._failed.wait()

    def _fail(self, message: str) -> None:
        self.startup_error = message
        logger.error("start-up failed: %s", message)
        if self._failed is not None:
            self._failed.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.startup_error is not None and scope["type"] == "http":
            error = ModelUnavailable("the service failed to start", detail=self.startup_error)
            await JSONResponse(error.info().body(), status_code=error.status)(scope, receive, send)
            return
        if self._app is None:
            try:
                self._app = self._build()
            except Exception as exc:
                if scope["type"] != "lifespan":
                    raise
                await receive()  # lifespan.startup
                self._fail(str(exc))
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return

        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "lifespan.startup.complete":
                started = True
                settle_heap()
            elif message["type"] == "lifespan.startup.failed":
                # Starlette sends the whole traceback; its last line names the cause.
                self._fail(last_line(message.get("message", "")) or "a lifespan failed")
            await send(message)

        try:
            await self._app(scope, receive, watched_send)
        except Exception as exc:
            if not started and self.startup_error is None:
                self._fail(str(leaf_exception(exc)))
            raise

    def _build(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from .factory import create_app

        return create_app()


def settle_heap() -> None:
    """Once the served app has started: collect the start-up garbage, then move every object
    alive — modules, schemas, the app, the plugins: about 100,000 objects, alive as long as the
    process — to the collector's permanent generation (``gc.freeze``).  Later collections,
    automatic ones while requests run and the one a model unload makes, no longer walk them: a
    full collection took 50 ms here (a latency spike on whichever request triggers it; a fifth
    of a model swap) and takes about 1 ms after.  Done here, once per served process, not in
    every app's lifespan: an embedding or a test suite that starts many apps would pay a full
    collection per start and pin every app it ever built."""
    gc.collect()
    gc.freeze()


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (a traceback's ``Error: message`` line)."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


app = LazyApp()
"""The ASGI entry point (``hypercorn ddx_llm:app``)."""
