"""The ``omni`` plugin: mlx-omni-server's own chat stack as a backend.

Selected by ``[core] backend = "omni"`` (``DDX_LLM_BACKEND=omni``), in an environment with the
omni install (README, "The omni backend"; ``requirements/omni.txt``).  Then
:class:`.backend.OmniBackend` serves chat as every backend does, through the core's chat route
(validation, admission, the model lease, events, OpenAI shapes are the core's), with the
upstream ``mlx_omni_server`` chat router behind it: its chat templates, tool parsers, prompt
cache and, with the add-on, structured output.  The upstream runs on a thread of its own
(:mod:`.bridge`), so its synchronous generation never stalls our event loop.

The package: ``backend`` (the protocol), ``request`` (our request → the upstream's, the
refusals), ``response`` (the upstream's chunks → deltas, its errors → ours), ``bridge`` (the
upstream thread), ``upstream`` (its import, app and model cache).

Importing this module is cheap: FastAPI, mlx and mlx-omni-server are imported on the upstream
thread by the first model load, and only when this backend is selected.
Settings: ``[omni]`` (:class:`OmniSettings`, variables ``DDX_LLM_OMNI_<KEY>``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import PositiveInt

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings, require_modules

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
    ``max_completion_tokens`` (the upstream's own default is 4096), capped at what the model's
    context window leaves after the prompt."""


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return ("omni", OmniSettings)


def _create_backend(app: Any) -> Any:
    require_modules(
        "mlx_omni_server",
        "fastapi",
        "mlx.core",
        "psutil",
        feature="the omni backend",
        install=INSTALL_HINT,
    )
    from .backend import OmniBackend

    return OmniBackend(app.settings, app.settings.registry)


@hookimpl
def ddx_llm_backends() -> dict[str, Any]:
    return {"omni": _create_backend}
