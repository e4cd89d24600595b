"""Loading a registry entry's model with mlx-lm, on the calling (worker) thread.

:func:`load_model` blocks for seconds: it runs in the MLX worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ddx_llm.errors import ModelUnavailable
from ddx_llm.plugins.mlx_models.memory import check_fits
from ddx_llm.plugins.mlx_models.source import ModelSource, model_folder

logger = logging.getLogger(__name__)


def load_model(
    source: ModelSource,
    models_dir: Path,
    *,
    allow_download: bool,
    headroom_gb: float | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` loaded by ``mlx_lm.load`` with weights evaluated (not lazy), on
    the calling thread.

    With ``headroom_gb`` set, a local model folder is first checked against the memory
    available (:func:`.memory.check_fits`): a model that does not fit is refused with
    ModelUnavailable before anything is loaded.
    """
    from mlx_lm import load

    folder = model_folder(source, models_dir, allow_download=allow_download)
    if headroom_gb is not None and Path(folder).is_dir():
        check_fits(source.model_id, Path(folder), headroom_gb)
    logger.info("loading %s from %s", source.model_id, folder)
    try:
        model, tokenizer = load(
            folder,
            tokenizer_config=source.tokenizer_config or None,
            model_config=source.model_config or None,
        )
    except Exception as exc:  # corrupt weights, a bad config.json, an unknown architecture...
        logger.warning("loading %s from %s failed", source.model_id, folder, exc_info=True)
        raise ModelUnavailable(
            f"model {source.model_id!r} failed to load",
            detail=f"{folder}: {type(exc).__name__}: {exc}",
        ) from exc
    return model, tokenizer
