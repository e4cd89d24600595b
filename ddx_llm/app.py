"""The app factory: settings → plugins → backend → model host → routes → middleware chain.

:func:`create_app` builds one :class:`DdxApp`.  The chain, outermost first, is the plugins'
middleware sorted by order (request_id 100 → cors 200 → metrics 300 → errors 400 → auth 500 →
third-party), then the core's body-size limit, then the Starlette router.  The router runs the
lifespan: plugin lifespans are entered in registration order and the default model is loaded in
the background, so ``/health`` answers ``loading`` at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from starlette.routing import BaseRoute, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from .admission import Admission
from .backend import Backend
from .config import ConfigError, Settings, add_sections, find_conf_dir, load_core
from .host import ModelHost
from .manager import PluginManager, build_plugin_manager
from .middleware import BodyLimitMiddleware, MiddlewareSpec, build_chain, flatten_specs
from .openapi import build_document
from .routes import core_routes

logger = logging.getLogger("ddx_llm")


@dataclass
class AppContext:
    """The running service, as handlers and plugins see it (``request.app.context``)."""

    settings: Settings
    pm: PluginManager
    backend: Backend
    host: ModelHost
    router: Router | None = None
    middleware: list[MiddlewareSpec] = field(default_factory=list)
    _openapi: dict[str, Any] | None = None

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def not_ready_reasons(self) -> list[str]:
        """Problems plugins report through ``ddx_llm_readiness`` (empty when all is well)."""
        return [reason for reason in self.hook.ddx_llm_readiness(host=self.host) if reason]

    def openapi_document(self) -> dict[str, Any]:
        """The OpenAPI document, built and amended by plugins once."""
        if self._openapi is None:
            document = build_document()
            self.hook.ddx_llm_openapi(document=document, settings=self.settings)
            self._openapi = document
        return self._openapi


class DdxApp:
    """The assembled ASGI app.  Sets ``scope["app"]`` so handlers reach :attr:`context` and so
    Starlette's router raises ``HTTPException`` for 404/405 (mapped by the errors plugin)."""

    def __init__(self, context: AppContext, asgi: ASGIApp) -> None:
        self.context = context
        self.asgi = asgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        # Starlette's router sets this itself once reached; middleware that must match routes
        # before that (e.g. to label a 401 with its route template) finds it here.
        scope.setdefault("router", self.context.router)
        await self.asgi(scope, receive, send)


def create_app(
    conf_dir: Path | None = None,
    *,
    extra_plugins: list[tuple[str, Any]] | tuple[tuple[str, Any], ...] = (),
) -> DdxApp:
    """Build the app from ``conf_dir`` (default: ``$DDX_LLM_CONF_DIR`` or ``./conf``).

    ``extra_plugins`` are ``(name, plugin)`` pairs registered after all others (for embedding and
    tests).  Raises :class:`ConfigError` with a clear message for any configuration problem.
    """
    settings = load_core(conf_dir or find_conf_dir())
    configure_logging(settings.core.log_level)
    pm = build_plugin_manager(
        disabled=settings.core.disabled_plugins,
        plugins_dir=settings.resolve_path(settings.core.plugins_dir),
        extra_plugins=extra_plugins,
        trace=settings.core.trace_hooks,
    )
    add_sections(settings, [declared for declared in pm.hook.ddx_llm_settings() if declared])
    backend = select_backend(settings, pm)
    host = ModelHost(
        backend,
        settings.registry,
        pm.hook,
        default_model=default_model(settings, backend),
        load_wait_seconds=settings.core.load_wait_seconds,
        admission=Admission(
            settings.core.max_running, settings.core.max_waiting, settings.core.max_queue_seconds
        ),
    )
    context = AppContext(settings=settings, pm=pm, backend=backend, host=host)
    router = context.router = Router(collect_routes(settings, pm), lifespan=_lifespan(context))
    specs = flatten_specs(pm.hook.ddx_llm_middleware(settings=settings, hook=pm.hook))
    context.middleware = specs
    asgi = build_chain(BodyLimitMiddleware(router, settings.core.max_body_bytes), specs)
    logger.info("ddx-llm ready to start: backend %s, model %s", backend.name, host.default_model)
    return DdxApp(context, asgi)


def select_backend(settings: Settings, pm: PluginManager) -> Backend:
    """Instantiate the backend named in conf; unknown or doubly-offered names are errors."""
    offers: dict[str, Any] = {}
    for offered in pm.hook.ddx_llm_backends(settings=settings):
        for name, factory in (offered or {}).items():
            if name in offers:
                raise ConfigError(f"two plugins offer a backend named {name!r}")
            offers[name] = factory
    wanted = settings.core.backend
    if wanted not in offers:
        known = ", ".join(sorted(offers)) or "(none: is a backend plugin disabled?)"
        raise ConfigError(f"unknown backend {wanted!r} in [core] backend; available: {known}")
    return offers[wanted](settings, settings.registry, pm.hook)


def default_model(settings: Settings, backend: Backend) -> str:
    """``[core] default_model``, else the backend's preference, else the first registry entry."""
    wanted = settings.core.default_model or backend.default_model(settings.registry)
    if wanted is None:
        return settings.registry.first().id
    if wanted not in settings.registry:
        raise ConfigError(f"default model {wanted!r} is not in {settings.conf_dir / 'models.toml'}")
    return wanted


def collect_routes(settings: Settings, pm: PluginManager) -> list[BaseRoute]:
    """Core routes, then plugin routes; a plugin route may not shadow a core path."""
    routes: list[BaseRoute] = list(core_routes())
    taken = {getattr(route, "path", None) for route in routes}
    for contributed in pm.hook.ddx_llm_routes(settings=settings, hook=pm.hook):
        for route in contributed or []:
            if getattr(route, "path", None) in taken:
                raise ConfigError(f"a plugin route shadows the core route {route.path}")  # type: ignore[attr-defined]
            routes.append(route)
    return routes


def _lifespan(context: AppContext):
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # pluggy calls the last registered plugin first; enter in registration order.
            for manager in reversed(
                context.hook.ddx_llm_lifespan(settings=context.settings, context=context)
            ):
                if manager is not None:
                    await stack.enter_async_context(manager)
            async with anyio.create_task_group() as tg:
                await tg.start(context.host.start)
                yield
                tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await context.host.close()

    return lifespan


def configure_logging(level: str) -> None:
    """Give the ``ddx_llm`` logger a level and, when nothing else logs, a stderr handler."""
    root = logging.getLogger()
    logger.setLevel(level.upper())
    if not root.handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
                defaults={"request_id": "-"},  # records made outside any request
            )
        )
        logger.addHandler(handler)
