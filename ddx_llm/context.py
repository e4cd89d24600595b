"""The running app as plugins see it: :class:`AppContext`.

Every hook but ``ddx_llm_settings`` receives it as ``app`` (datasette hands ``datasette`` to its
hooks the same way).  Route handlers reach it as ``request.app.context``, middleware as
``scope["app"].context``; :func:`app_context` does either from a scope.  One process may run
several apps (tests do): keep per-app state in :meth:`AppContext.state`, never in module globals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.routing import BaseRoute
from starlette.types import Scope

from . import events
from .disconnect import Watchers
from .openapi import add_body_errors, build_document

if TYPE_CHECKING:
    from pluggy import PluginManager

    from .backend import Backend
    from .config import Settings
    from .host import ModelHost
    from .middleware import MiddlewareSpec

T = TypeVar("T")


class AppContext:
    """One running ddx-llm app.

    Attributes:
        settings: the validated configuration (``settings.core``, ``settings.section(name)``,
            ``settings.registry``).
        pm: the plugin manager; ``hook`` is its hook relay.
        backend: the active backend (set once the backend hooks ran; None before).
        host: the :class:`~ddx_llm.host.ModelHost` (set with the backend; None before).
        routes: every route, core routes first (set once they are collected).
        middleware: the middleware chain, outermost first (set once it is built).
        observers: who takes which lifecycle event (:meth:`emit` delivers through it;
            ``observers.takes(kind)`` says whether an event is worth making).
        watchers: the task group the requests' disconnect watchers run in, while the app's
            lifespan runs (:class:`~ddx_llm.disconnect.Watchers`).
    """

    def __init__(self, settings: Settings, pm: PluginManager) -> None:
        self.settings = settings
        self.pm = pm
        self.backend: Backend | None = None
        self.host: ModelHost | None = None
        self.routes: list[BaseRoute] = []
        self.middleware: list[MiddlewareSpec] = []
        self.watchers = Watchers()
        self.observers = events.Observers(pm.hook, self)
        self._state: dict[str, Any] = {}
        self._openapi: dict[str, Any] | None = None

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def state(self, plugin: str, create: Callable[[], T] | None = None) -> T:
        """The state object ``plugin`` keeps for this app, made by ``create()`` on first use.

        The object is the plugin's own (a collector, a limiter, a dict ...); by convention the
        key is the plugin's name.  Raises KeyError when there is none and no ``create``.
        """
        if plugin not in self._state:
            if create is None:
                raise KeyError(f"no state kept for {plugin!r} in this app")
            self._state[plugin] = create()
        return self._state[plugin]

    def emit(self, event: events.Event) -> None:
        """Deliver a lifecycle event to every ``ddx_llm_observe`` implementation that takes
        it (see :class:`ddx_llm.events.Observers`)."""
        self.observers.deliver(event)

    def not_ready_reasons(self) -> list[str]:
        """Problems besides the model's state: the backend's own report (a dead worker, a
        stall), then what plugins report through ``ddx_llm_readiness``; empty when none."""
        host = self.host
        reasons = []
        if host is not None and self.backend is not None:
            backend_reason = self.backend.not_ready_reason(host.resident_handle)
            if backend_reason:
                reasons.append(backend_reason)
        reasons.extend(r for r in self.hook.ddx_llm_readiness(app=self, host=host) if r)
        return reasons

    def openapi_document(self) -> dict[str, Any]:
        """The OpenAPI document, built and amended by plugins once."""
        if self._openapi is None:
            document = build_document()
            self.hook.ddx_llm_openapi(document=document, app=self, settings=self.settings)
            add_body_errors(document)  # plugin routes read JSON through the core too
            self._openapi = document
        return self._openapi


def app_context(scope: Scope) -> AppContext:
    """The :class:`AppContext` serving ``scope``."""
    return scope["app"].context
