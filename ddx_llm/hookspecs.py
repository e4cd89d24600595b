"""Hook specifications: every extension point of ddx-llm (plugin contract 1.0).

A plugin is any module or object with functions named like these hooks and decorated with
``ddx_llm.hookimpl``.  Built-in features (request ids, CORS, auth, metrics, each backend) are
plugins written against exactly this API.  An implementation may accept any subset of its hook's
arguments (pluggy passes them by name).

Arguments shared by many hooks:

- ``app``: the running app, :class:`ddx_llm.context.AppContext` — ``app.settings``,
  ``app.hook``, ``app.backend``, ``app.host``, ``app.emit(event)`` and ``app.state(plugin,
  create)``, the place for a plugin's own per-app state.
- ``settings``: ``app.settings``, the validated :class:`ddx_llm.config.Settings`
  (``settings.core``, ``settings.section(name)``, ``settings.registry``).

"Once" hooks run while the app is built, in the server process, before any request.  Unless a
hook says otherwise, every implementation's result is collected; pluggy calls the most recently
registered plugin first (extra, then drop-ins, then entry points, then built-ins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse
    from contextlib import AbstractAsyncContextManager

    from starlette.routing import BaseRoute
    from starlette.types import Scope

    from .backend import BackendFactory
    from .config import Settings
    from .context import AppContext
    from .errors import ErrorInfo
    from .events import Event
    from .host import ModelHost
    from .middleware import MiddlewareSpec

PROJECT = "ddx_llm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def ddx_llm_settings() -> tuple[str, type] | None:
    """Declare the plugin's own configuration section.

    Return ``(section, model)``: ``section`` is the table name in ``conf/ddx-llm.toml`` (name it
    after the plugin), ``model`` a subclass of :class:`ddx_llm.config.SectionSettings`.  The
    section is validated at start-up; environment variables ``DDX_LLM_<SECTION>_<FIELD>`` (or the
    model's own ``env_prefix``) override the file.  Read it later with
    ``settings.section(section)``.

    Called once, first, before the app exists.  Two plugins declaring one section stop start-up
    naming both.

    Example: ``return ("quota", QuotaSettings)``.
    """


@hookspec
def ddx_llm_backends(app: AppContext, settings: Settings) -> dict[str, BackendFactory] | None:
    """Offer backends by name: return ``{name: factory}``.

    ``factory(app)`` returns an object following :class:`ddx_llm.backend.Backend` (subclass
    :class:`ddx_llm.backend.BackendBase`).  The core creates only the one named by
    ``settings.core.backend``; start-up fails listing the known names if it is unknown, if two
    plugins offer one name, or if the object lacks a member of the protocol.  Keep heavy
    imports inside the factory.

    Called once.  Example: ``return {"echo": lambda app: EchoBackend(app.settings)}``.
    """


@hookspec
def ddx_llm_routes(app: AppContext, settings: Settings) -> list[BaseRoute] | None:
    """Contribute routes: a list of Starlette ``Route``/``Mount`` objects.

    Use :class:`ddx_llm.routing.Route` to declare ``protected=True`` (the ``auth`` plugin then
    refuses the route without a valid key) and ``surface="..."`` (the API surface events and
    metrics report).  Core routes come first; a plugin route cannot shadow one.  Handlers reach
    the app as ``request.app.context``.

    Called once.  Example:
    ``return [Route("/v1/usage", usage, methods=["GET"], protected=True)]``.
    """


@hookspec
def ddx_llm_middleware(
    app: AppContext, settings: Settings
) -> MiddlewareSpec | list[MiddlewareSpec] | None:
    """Contribute pure-ASGI middleware around the router.

    Return a :class:`ddx_llm.middleware.MiddlewareSpec` ``(name, order, factory)`` or a list of
    them; ``factory(inner_app)`` returns the wrapping app.  All middleware, the core's error
    layer included, is sorted by ``order``, lowest outermost; ``ddx-llm plugins`` shows the
    chain.  Two with one name or order stop start-up naming both.

    Called once.  Example:
    ``return MiddlewareSpec("hello", 250, lambda inner: HelloHeader(inner))``.
    """


@hookspec
def ddx_llm_lifespan(app: AppContext, settings: Settings) -> AbstractAsyncContextManager | None:
    """Return an async context manager entered at server start-up and exited at shutdown.

    Entered in plugin registration order (built-ins first) before the default model starts
    loading, exited in reverse after it was unloaded.  An exception on entry aborts start-up
    with its message (the process exits non-zero under ``ddx-llm serve``).  Do I/O here, with
    anyio, not in the "once" hooks.

    Example: ``return open_connection_pool(settings.section("quota"))``.
    """


@hookspec(firstresult=True)
def ddx_llm_map_exception(exc: BaseException, scope: Scope, app: AppContext) -> ErrorInfo | None:
    """Map an exception raised while serving ``scope`` to an :class:`ddx_llm.errors.ErrorInfo`.

    Return None to let the next implementation try.  Stops at first non-None result.  When no
    implementation answers, the core maps it: an ``LlmError`` to itself, routing misses to
    404/405, pydantic validation errors to 422, anything else to 500 ``llm_error`` (traceback
    logged, never sent).  Called per failed request, on the event loop.

    Example: ``if isinstance(exc, QuotaStoreDown): return ErrorInfo(503, "quota_down", "...")``.
    """


@hookspec(firstresult=True)
def ddx_llm_shape_error(info: ErrorInfo, scope: Scope, app: AppContext) -> ErrorInfo | None:
    """Restate an error answer in another API's own error shape, for the routes of a surface.

    ``info`` is the mapped error (status, code, message, detail, headers).  Return a new
    :class:`ddx_llm.errors.ErrorInfo` with the status and ``payload`` (the body) that API
    specifies — e.g. Anthropic's ``{"type": "error", "error": {...}}`` with 529 for
    ``overloaded`` — or None to keep ours.  Stops at first non-None result.  Called for every
    error response and every in-band stream error, on the event loop; decide by
    ``ddx_llm.routing.matched_route(scope).surface``.

    Example: ``if matched_route(scope).surface == "messages": return anthropic_error(info)``.
    """


@hookspec
def ddx_llm_health(app: AppContext, host: ModelHost) -> dict[str, Any] | None:
    """Return extra fields merged into the ``/health`` body.

    Core fields (``status``, ``model``, ``model_state``, ``backend`` ...) cannot be overwritten;
    for a key two plugins return, the first answer wins.  Called on every ``/health`` request,
    on the event loop: must be fast and must not block.

    Example: ``return {"quota": {"clients": len(app.state("quota").used)}}``.
    """


@hookspec
def ddx_llm_readiness(app: AppContext, host: ModelHost) -> str | None:
    """Report a reason the service is not ready, or None when this plugin sees no problem.

    Any reason makes ``/readyz`` answer 503 and ``/health`` say ``degraded`` with the reasons
    listed.  Called on every ``/health`` and ``/readyz`` request; must be fast.

    Example: ``return None if store.up else "the quota store does not answer"``.
    """


@hookspec
def ddx_llm_openapi(document: dict[str, Any], app: AppContext, settings: Settings) -> None:
    """Amend the OpenAPI 3.2 document in place (security schemes, a plugin's own routes).

    Called once, the first time ``/openapi.json`` is served.
    """


@hookspec
def ddx_llm_observe(event: Event, app: AppContext) -> None:
    """Receive a lifecycle fact (:mod:`ddx_llm.events`).

    Request events (``RequestQueued``, ``RequestStarted``, ``RequestRejected``, ``FirstToken``,
    ``TokensGenerated``, ``RequestDone``) carry ``event.request``: the request id, the client
    identity, the method, the route template and the API surface; ``RequestDone`` has the
    usage and the finish reason (``cancelled`` when the client left).  Model events:
    ``ModelLoading``, ``ModelLoaded``, ``ModelFailed``, ``ModelUnloaded``.

    Called on the event loop, synchronously, for every event: observers must never block (hand
    I/O to a thread or a queue) and should not raise; an exception is logged and swallowed, and
    the other observers still get the event.  Ignore event types you do not know.
    ``TokensGenerated`` comes once per generated piece: an implementation that does not want it
    declares the types it takes with :func:`ddx_llm.events.observes` and is not called for the
    others (when no implementation takes ``TokensGenerated``, the core does not even make it).

    Example: ``if isinstance(event, RequestDone): app.state("quota", dict)[event.request.client]
    = ...``.
    """


@hookspec
def ddx_llm_commands(subcommands: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``ddx-llm`` command line.

    ``subcommands`` is argparse's sub-parser collection: call ``subcommands.add_parser(name,
    help=...)``, add arguments, and ``set_defaults(run=function)`` where ``function(args)``
    returns the exit status.  ``args.conf`` is the ``--conf`` folder given, if any.

    Called once per ``ddx-llm`` invocation, before its arguments are parsed (the plugins come
    from the conf's ``[core]`` section, or the built-ins and entry points when there is none).
    Example: the ``mlx`` plugin's ``ddx-llm convert GGUF DEST``.
    """
