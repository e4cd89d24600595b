"""The app factory: settings → plugins → backend → model host → routes → middleware chain.

:func:`create_app` builds one :class:`DdxApp`.  The chain, outermost first, is the plugins'
middleware and the core's layers (the framing guard, the error layer) sorted by order, then the
core's body-size limit, then the Starlette router.  The router runs the lifespan: plugin
lifespans are entered in registration order and the default model is loaded in the
background, so ``/health`` answers ``loading`` at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import sniffio
from starlette.routing import BaseRoute, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from .api import core_routes
from .backend import Backend, missing_members
from .config import ConfigError, Settings, add_sections, find_conf_dir, load_core
from .context import AppContext
from .disconnect import WATCHERS
from .host import Admission, ModelHost
from .manager import build_plugin_manager
from .middleware import CORE, MiddlewareSpec, build_chain, check_order, error_shaping, framing
from .middleware.body_limit import BodyLimitMiddleware
from .routing import DirectRouter, RouteMatcher

logger = logging.getLogger("ddx_llm")


class DdxApp:
    """The assembled ASGI app.

    For every HTTP request it sets ``scope["app"]`` (handlers reach :attr:`context`; Starlette's
    router then raises ``HTTPException`` for 404/405), makes the app's disconnect watchers the
    request's (:data:`~ddx_llm.disconnect.WATCHERS`), makes sure ``scope["state"]`` exists,
    matches the route once for the middleware (:func:`ddx_llm.routing.matched_route`), and
    shapes an error that a plugin middleware outside the core's error layer lets escape.
    """

    def __init__(self, context: AppContext, asgi: ASGIApp, matcher: RouteMatcher) -> None:
        self.context = context
        self.asgi = asgi
        self.matcher = matcher
        self._guarded = error_shaping.ErrorShapingMiddleware(asgi, context, outermost=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if scope["type"] != "http":
            await self.asgi(scope, receive, send)
            return
        self.matcher.match(scope)
        WATCHERS.set(self.context.watchers)  # the request's task: its own copy of the context
        if sniffio.current_async_library_cvar.get() is None:
            # anyio asks sniffio which event loop runs on every call (a cancel scope, the
            # clock); on asyncio sniffio finds out through current_task() each time unless the
            # task says it, as anyio.run() does for its tasks — a server's request tasks do not
            sniffio.current_async_library_cvar.set(sniffio.current_async_library())
        scope.setdefault("state", {})  # plugins may rely on it (request id, client identity)
        await self._guarded(scope, receive, send)


def create_app(
    conf_dir: Path | None = None,
    *,
    extra_plugins: list[tuple[str, Any]] | tuple[tuple[str, Any], ...] = (),
    entry_points: bool = True,
) -> DdxApp:
    """Build the app from ``conf_dir`` (default: ``$DDX_LLM_CONF_DIR`` or ``./conf``).

    ``extra_plugins`` are ``(name, plugin)`` pairs registered after all others (for embedding
    and tests; one already registered through its entry point is kept once).  ``entry_points``
    False loads no installed plugin.  Raises :class:`ConfigError` with a clear message for any
    configuration or plugin problem.
    """
    settings = load_core(conf_dir or find_conf_dir())
    configure_logging(settings.core.log_level)
    pm = build_plugin_manager(
        disabled=settings.core.disabled_plugins,
        plugins_dir=settings.resolve_path(settings.core.plugins_dir),
        plugins_dir_required="plugins_dir" in settings.core.model_fields_set,
        extra_plugins=extra_plugins,
        entry_points=entry_points,
        trace=settings.core.trace_hooks,
    )
    add_sections(settings, list(reversed(pm.results("ddx_llm_settings"))))
    context = AppContext(settings, pm)
    context.backend = backend = select_backend(context)
    context.host = host = ModelHost(
        backend,
        settings.registry,
        context.emit,
        default_model=default_model(settings, backend),
        load_wait_seconds=settings.core.load_wait_seconds,
        admission=Admission(
            settings.core.max_running, settings.core.max_waiting, settings.core.max_queue_seconds
        ),
    )
    context.routes = routes = collect_routes(context)
    router = Router(routes, lifespan=_lifespan(context, collect_lifespans(context)))
    context.middleware = specs = collect_middleware(context)
    asgi = build_chain(
        BodyLimitMiddleware(DirectRouter(router), settings.core.max_body_bytes), specs
    )
    logger.info("ddx-llm ready to start: backend %s, model %s", backend.name, host.default_model)
    return DdxApp(context, asgi, RouteMatcher(routes))


def select_backend(app: AppContext) -> Backend:
    """Instantiate the backend named in conf; unknown or doubly-offered names, and objects
    that miss a member of the protocol, are errors naming the plugin."""
    offers: dict[str, tuple[str, Callable[[AppContext], Backend]]] = {}
    for plugin, offered in app.pm.results("ddx_llm_backends", app=app, settings=app.settings):
        if not isinstance(offered, dict) or not all(callable(f) for f in offered.values()):
            raise ConfigError(
                f"plugin {plugin}: ddx_llm_backends returned {offered!r}; expected "
                "{name: factory} where factory(app) returns the backend"
            )
        for name, factory in offered.items():
            if name in offers:
                raise ConfigError(
                    f"plugins {offers[name][0]} and {plugin} both offer a backend named {name!r}"
                )
            offers[name] = (plugin, factory)
    wanted = app.settings.core.backend
    if wanted not in offers:
        known = ", ".join(sorted(offers)) or "(none: is a backend plugin disabled?)"
        raise ConfigError(f"unknown backend {wanted!r} in [core] backend; available: {known}")
    plugin, factory = offers[wanted]
    backend = factory(app)
    missing = missing_members(backend)
    if missing:
        raise ConfigError(
            f"plugin {plugin}: backend {wanted!r} lacks {', '.join(missing)} of the backend "
            "protocol; subclass ddx_llm.backend.BackendBase for the optional members"
        )
    return backend


def default_model(settings: Settings, backend: Backend) -> str:
    """``[core] default_model``, else the backend's preference, else the first registry entry."""
    wanted = settings.core.default_model or backend.default_model(settings.registry)
    if wanted is None:
        return settings.registry.first().id
    if wanted not in settings.registry:
        raise ConfigError(f"default model {wanted!r} is not in {settings.conf_dir / 'models.toml'}")
    return wanted


def collect_routes(app: AppContext) -> list[BaseRoute]:
    """Core routes, then plugin routes; a plugin route may not shadow a core path."""
    routes: list[BaseRoute] = list(core_routes())
    taken = {getattr(route, "path", None) for route in routes}
    for plugin, contributed in app.pm.results("ddx_llm_routes", app=app, settings=app.settings):
        if not isinstance(contributed, list | tuple) or not all(
            isinstance(route, BaseRoute) for route in contributed
        ):
            raise ConfigError(
                f"plugin {plugin}: ddx_llm_routes returned {contributed!r}; expected a list of "
                "Starlette routes (ddx_llm.routing.Route, Mount)"
            )
        for route in contributed:
            path = getattr(route, "path", None)
            if path in taken:
                raise ConfigError(f"plugin {plugin}: its route {path} shadows the core route")
            routes.append(route)
    return routes


def collect_middleware(app: AppContext) -> list[MiddlewareSpec]:
    """The plugins' middleware and the core's layers (framing guard, errors), outermost first."""
    core = app.settings.core
    specs = [
        MiddlewareSpec(
            framing.NAME,
            framing.ORDER,
            lambda inner: framing.FramingMiddleware(
                inner,
                app,
                body_timeout=core.body_timeout_seconds,
                drain_bytes=core.max_body_bytes,
            ),
            CORE,
        ),
        MiddlewareSpec(
            error_shaping.NAME,
            error_shaping.ORDER,
            lambda inner: error_shaping.ErrorShapingMiddleware(inner, app),
            CORE,
        ),
    ]
    contributed = app.pm.results("ddx_llm_middleware", app=app, settings=app.settings)
    for plugin, result in reversed(contributed):  # registration order: ties name the first
        offered = result if isinstance(result, list | tuple) else [result]
        for spec in offered:
            if not isinstance(spec, MiddlewareSpec):
                raise ConfigError(
                    f"plugin {plugin}: ddx_llm_middleware returned {spec!r}; expected a "
                    "ddx_llm.middleware.MiddlewareSpec, a list of them, or None"
                )
            specs.append(replace(spec, plugin=plugin))
    return check_order(specs)


def collect_lifespans(app: AppContext) -> list[AbstractAsyncContextManager]:
    """The plugins' lifespan context managers, in registration order (made when the app is
    built, entered when it starts)."""
    managers = []
    for plugin, manager in reversed(
        app.pm.results("ddx_llm_lifespan", app=app, settings=app.settings)
    ):
        if not hasattr(manager, "__aenter__") or not hasattr(manager, "__aexit__"):
            raise ConfigError(
                f"plugin {plugin}: ddx_llm_lifespan returned {manager!r}; expected an async "
                "context manager (e.g. from @contextlib.asynccontextmanager) or None"
            )
        managers.append(manager)
    return managers


def _lifespan(
    context: AppContext, managers: list[AbstractAsyncContextManager]
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for manager in managers:
                await stack.enter_async_context(manager)
            async with anyio.create_task_group() as tg:
                await tg.start(context.watchers.run)
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
