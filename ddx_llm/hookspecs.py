"""Hook specifications: every extension point of ddx-llm.

A plugin is any module or object with functions named like these hooks and decorated with
``ddx_llm.hookimpl``.  Built-in features (errors, mock, auth, CORS, metrics, ...) are plugins
written against exactly this API.  Hook implementations may accept any subset of the documented
arguments (pluggy passes them by name).

Arguments shared by many hooks:

- ``settings``: the validated :class:`ddx_llm.config.Settings` (``settings.core`` and
  ``settings.section(name)`` for a plugin's own section).
- ``hook``: the plugin manager's hook relay, to call other hooks (e.g. ``hook.ddx_llm_observe``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from starlette.routing import BaseRoute
    from starlette.types import Scope

    from .backend import BackendFactory
    from .config import Settings
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

    Return ``(section, model)`` where ``section`` is the table name in ``conf/ddx-llm.toml`` and
    ``model`` a subclass of :class:`ddx_llm.config.SectionSettings` (pydantic-settings).  The
    section's values are validated at start-up; environment variables ``<env_prefix><FIELD>``
    (default prefix ``DDX_LLM_<SECTION>_``) override the file.  Read the result later with
    ``settings.section(section)``.

    Called once, before any other hook, while the settings are built.  Return None to declare
    nothing.  Two plugins declaring the same section is a start-up error.
    """


@hookspec
def ddx_llm_middleware(
    settings: Settings, hook: Any
) -> MiddlewareSpec | list[MiddlewareSpec] | None:
    """Contribute one or more pure-ASGI middleware around the router.

    Return a :class:`ddx_llm.middleware.MiddlewareSpec` ``(name, order, factory)`` or a list of
    them.  ``factory(app)`` wraps the inner ASGI app and returns the wrapping one.  The core sorts
    all specs by ``order``, lowest outermost (built-ins: request_id 100, cors 200, metrics 300,
    errors 400, auth 500; pick a number between two to place yours), and logs the final order.

    Called once when the app is built.
    """


@hookspec
def ddx_llm_routes(settings: Settings, hook: Any) -> list[BaseRoute] | None:
    """Contribute extra Starlette routes (``Route``, ``Mount``).

    Core routes come first; a plugin route cannot shadow one.  Handlers reach the running
    service through ``request.app.context`` (:class:`ddx_llm.app.AppContext`).

    Called once when the app is built.
    """


@hookspec
def ddx_llm_backends(settings: Settings) -> dict[str, BackendFactory] | None:
    """Offer backends by name: return ``{name: factory}``.

    ``factory(settings, registry, hook)`` returns an object following
    :class:`ddx_llm.backend.Backend`.  The core instantiates only the one named by
    ``settings.core.backend``; start-up fails listing the known names if it is unknown or if two
    plugins offer the same name.  Keep heavy imports inside the factory.

    Called once when the app is built.
    """


@hookspec
def ddx_llm_lifespan(settings: Settings, context: Any) -> AbstractAsyncContextManager | None:
    """Return an async context manager entered at server start-up and exited at shutdown.

    ``context`` is the :class:`ddx_llm.app.AppContext` (host, registry, hook).  Context managers
    are entered in plugin registration order and exited in reverse.  An exception on entry
    aborts start-up with that message.
    """


@hookspec(firstresult=True)
def ddx_llm_map_exception(exc: BaseException, scope: Scope) -> ErrorInfo | None:
    """Map an exception raised while serving ``scope`` to an :class:`ddx_llm.errors.ErrorInfo`.

    Return None to let the next implementation try.  Stops at first non-None result.  When no
    implementation answers, the ``errors`` plugin answers 500 ``llm_error`` and logs the
    traceback (which never reaches the client).
    """


@hookspec
def ddx_llm_health(host: ModelHost) -> dict[str, Any] | None:
    """Return extra fields merged into the ``/health`` body (e.g. ``{"queue": {...}}``).

    Called on every ``/health`` request: must be fast and must not block.  Core fields (``status``,
    ``model``, ``model_state``, ...) cannot be overwritten.
    """


@hookspec
def ddx_llm_readiness(host: ModelHost) -> str | None:
    """Report a reason the service is not ready, or None when this plugin sees no problem.

    Any non-None answer makes ``/readyz`` answer 503 and ``/health`` say ``degraded`` with the
    reasons listed.  Called on every ``/health`` and ``/readyz`` request; must be fast.
    """


@hookspec
def ddx_llm_openapi(document: dict[str, Any], settings: Settings) -> None:
    """Amend the OpenAPI 3.1 document in place (e.g. add security schemes).

    Called once, the first time ``/openapi.json`` is served.
    """


@hookspec
def ddx_llm_observe(event: Event) -> None:
    """Receive a lifecycle fact (:mod:`ddx_llm.events`): request queued/started, first token,
    tokens, done (with usage and finish reason, ``cancelled`` included), model
    loading/loaded/failed/unloaded.

    Called on the event loop, synchronously, for every event.  Observers must never raise and
    never block; an exception is logged and swallowed.
    """
