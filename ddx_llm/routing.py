"""Routes that say what they are, and the one place middleware learns which route a request hits.

:class:`Route` is Starlette's ``Route`` with two declarations a plugin makes where it declares
the route:

- ``protected=True``: the route needs an authenticated client.  The core does not authenticate;
  an authenticating plugin (the built-in ``auth``) refuses such routes without a valid key.
- ``surface="chat.completions"``: the API surface the route belongs to, as lifecycle events and
  metrics report it.

Before any middleware runs, the app matches each HTTP request against its routes once, as
Starlette's router will, and puts the result in the scope.  :func:`matched_route` reads it: the
route *template* (``/v1/responses/{id}``, never the raw path; ``unmatched`` when nothing
matches), whether it is protected, and its surface.  Middleware that decides or labels by route
(auth, metrics, rate limits) uses that, never a second matching of its own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Receive, Scope, Send

SCOPE_KEY = "ddx_llm.route"
UNMATCHED_TEMPLATE = "unmatched"
MATCH_CACHE_SIZE = 1024


class Route(StarletteRoute):
    """A Starlette ``Route`` that may declare ``protected`` and ``surface`` (see the module
    docstring); every other argument is Starlette's."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        protected: bool = False,
        surface: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.protected = protected
        self.surface = surface
        handler = _unwrapped(endpoint)
        plain = not kwargs.get("middleware") and kwargs.get("max_body_size") is None
        if plain and (inspect.isfunction(handler) or inspect.ismethod(handler)):
            self.app = request_response(endpoint)


def _unwrapped(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """The function behind ``functools.partial`` layers, as Starlette looks at it."""
    while isinstance(endpoint, functools.partial):
        endpoint = endpoint.func
    return endpoint


def request_response(endpoint: Callable[..., Any]) -> ASGIApp:
    """Starlette's ``request_response`` — ``endpoint(request)`` returns the response, run in
    a thread when it is not async — without its exception-handler wrapper: a ddx-llm app has
    no Starlette exception handlers (the core's error layer answers every exception), so that
    wrapper would only re-raise, at the cost of a ``send`` wrapper on every message."""
    asynchronous = inspect.iscoroutinefunction(_unwrapped(endpoint))
    call = endpoint if asynchronous else functools.partial(run_in_threadpool, endpoint)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await call(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


@dataclass(frozen=True)
class RouteMatch:
    """Which route a request hits: its template, and what the route declares."""

    template: str
    protected: bool = False
    surface: str | None = None


UNMATCHED = RouteMatch(UNMATCHED_TEMPLATE)


def route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without the ``root_path`` mount prefix.

    Mirrors Starlette's own (private) ``get_route_path``.
    """
    path, root = scope["path"], scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def matched_route(scope: Scope) -> RouteMatch:
    """The route the request hits, as the app matched it on the way in (UNMATCHED outside an
    app, e.g. a middleware tested on its own)."""
    return scope.get(SCOPE_KEY, UNMATCHED)


class RouteMatcher:
    """Matches requests against a list of routes, as Starlette's router does (a path that
    matches with another method counts, as for its 405), through Mounts.  Results are cached by
    method and path, so a request costs one dictionary lookup."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = list(routes)
        self._match = functools.lru_cache(maxsize=MATCH_CACHE_SIZE)(self._uncached)

    def __call__(self, scope: Scope) -> RouteMatch:
        return self._match(scope["method"], route_path(scope))[0]

    def match(self, scope: Scope) -> None:
        """Put the match in ``scope`` for :func:`matched_route` and, when it is a route of the
        top level that takes the request as it is, for :class:`DirectRouter`."""
        found, direct = self._match(scope["method"], route_path(scope))
        scope[SCOPE_KEY] = found
        if direct is not None:
            scope[DIRECT_KEY] = (scope["method"], scope["path"], *direct)

    def _uncached(
        self, method: str, path: str
    ) -> tuple[RouteMatch, tuple[BaseRoute, dict[str, Any]] | None]:
        probe = {"type": "http", "method": method, "path": path, "root_path": ""}
        return _find(self.routes, probe, "") or UNMATCHED, _direct(self.routes, probe)


DIRECT_KEY = "ddx_llm.direct"


def _direct(routes: Sequence[BaseRoute], scope: dict[str, Any]) -> tuple[BaseRoute, dict] | None:
    """The first route that matches fully, as Starlette's router takes it, and the scope it
    adds; None when it is a Mount or no route matches fully (the router then decides: 405,
    redirect, 404)."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return None if isinstance(route, Mount) else (route, child)
    return None


class DirectRouter:
    """Starlette's ``Router``, without its search through every route for a request the app
    matched already (:meth:`RouteMatcher.match`): it hands the request to that route as the
    router would.  Anything else — another scope type, a request some middleware rewrote to
    another method or path, a Mount, no full match — goes to the router itself."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = scope.get(DIRECT_KEY)
        if direct is None or direct[0] != scope["method"] or direct[1] != scope["path"]:
            await self.router(scope, receive, send)
            return
        route, child = direct[2], direct[3]
        scope.setdefault("router", self.router)
        scope["route"] = route
        scope.update(child)
        if "path_params" in child:  # the cached one stays as it was
            scope["path_params"] = dict(child["path_params"])
        await route.handle(scope, receive, send)


def _find(routes: Sequence[BaseRoute], scope: dict[str, Any], prefix: str) -> RouteMatch | None:
    partial: RouteMatch | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            if match is not Match.FULL:
                continue
            if not route.routes:  # an arbitrary ASGI app: its paths are not ours to list
                return RouteMatch(prefix + route.path_format)
            inner = _find(route.routes, {**scope, **child}, prefix + route.path)
            if inner is not None:
                return inner
            continue
        found = RouteMatch(
            prefix + getattr(route, "path", UNMATCHED_TEMPLATE),
            protected=getattr(route, "protected", False),
            surface=getattr(route, "surface", None),
        )
        if match is Match.FULL:
            return found
        partial = partial or found
    return partial
