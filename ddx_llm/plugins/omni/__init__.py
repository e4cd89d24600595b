"""The ``omni`` plugin: mlx-omni-server's own chat stack behind our middleware.

Selected by ``[core] backend = "omni"`` (``DDX_LLM_BACKEND=omni``), in an environment with the
omni install (README, "The omni backend"; ``requirements/omni.txt``).  Then

- ``POST /v1/chat/completions`` is answered by the upstream ``mlx_omni_server`` chat router
  (its chat templates, tool parsers, prompt cache and, with the add-on, structured output)
  through :class:`.omni_proxy.OmniChatMiddleware`, a middleware inside auth (order 600), so
  request-ID, CORS, metrics, errors and auth apply as to every route;
- the upstream runs on a thread of its own (:mod:`.omni_bridge`), so its synchronous
  generation never stalls our event loop (``/health`` stays fast, streams interleave);
- the model lifecycle is ours: :class:`.omni_backend.OmniBackend` drives the upstream's model
  cache from ``/v1/models/load``, and ``/health`` gains an ``omni`` field.

Importing this module is cheap: FastAPI, mlx and mlx-omni-server are imported on the upstream
thread by the first model load, and only when this backend is selected.
Settings: ``[omni]`` (:class:`OmniSettings`, variables ``DDX_LLM_OMNI_<KEY>``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import PositiveInt

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings, require_modules

if TYPE_CHECKING:
    from ddx_llm.config import Settings
    from ddx_llm.middleware import MiddlewareSpec

ORDER = 600
INSTALL_HINT = (
    "pip install --no-deps mlx-omni-server==0.5.3 && pip install -r requirements/omni.txt "
    "(in a virtualenv of its own; README, 'The omni backend')"
)


class OmniSettings(SectionSettings):
    """``[omni]``: the upstream's logging and the default completion limit."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    """Level of the upstream's ``mlx_omni`` logger.  INFO logs every request's messages and
    tools; DEBUG also the rendered prompt."""
    max_tokens: PositiveInt = 2048
    """Completion limit when a request sets neither ``max_tokens`` nor
    ``max_completion_tokens`` (the upstream's own default is 4096), capped at the model's
    context window."""


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return ("omni", OmniSettings)


def _create_backend(app: Any) -> Any:
    require_modules(
        "mlx_omni_server", "fastapi", "mlx.core", feature="the omni backend", install=INSTALL_HINT
    )
    from .backend import OmniBackend

    return OmniBackend(app.settings, app.settings.registry)


@hookimpl
def ddx_llm_backends() -> dict[str, Any]:
    return {"omni": _create_backend}


@hookimpl
def ddx_llm_middleware(settings: Settings) -> MiddlewareSpec | None:
    if settings.core.backend != "omni":
        return None
    from ddx_llm.middleware import MiddlewareSpec

    from .proxy import OmniChatMiddleware

    def factory(app: Any) -> OmniChatMiddleware:
        return OmniChatMiddleware(
            app,
            max_body_bytes=settings.core.max_body_bytes,
            default_max_tokens=settings.section("omni").max_tokens,
        )

    return MiddlewareSpec("omni", ORDER, factory)
