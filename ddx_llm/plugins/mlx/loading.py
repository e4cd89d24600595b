"""Loading a registry entry's model with mlx-lm, on the calling (worker) thread.

:func:`load_model` blocks for seconds: it runs in the MLX worker thread.  It reports its
progress (:mod:`ddx_llm.plugins.mlx_models.progress`) to the sink of the enclosing
``reporting_to`` — the bundled model's conversion on first use, then the weights (mlx-lm loads
them lazily; they are evaluated here in groups of :data:`WEIGHTS_GROUP_BYTES`, each reported).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ddx_llm.errors import ModelUnavailable
from ddx_llm.plugins.mlx_models.memory import check_fits, release
from ddx_llm.plugins.mlx_models.progress import WEIGHTS, Progress, Sink, current_sink
from ddx_llm.plugins.mlx_models.source import ModelSource, model_folder

logger = logging.getLogger(__name__)

WEIGHTS_GROUP_BYTES = 16 * 1024 * 1024
"""Weights are evaluated (read into memory) this much at a time, then progress is reported."""


def load_model(
    source: ModelSource,
    models_dir: Path,
    *,
    allow_download: bool,
    headroom_gb: float | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` loaded by ``mlx_lm.load`` with weights evaluated (not lazy), on
    the calling thread, reporting progress to :func:`~ddx_llm.plugins.mlx_models.progress.
    current_sink` (if any).

    With ``headroom_gb`` set, a local model folder is first checked against the memory
    available (:func:`.memory.check_fits`): a model that does not fit is refused with
    ModelUnavailable before anything is loaded.  Memory the process has freed but not given
    back yet (a previous model's: :func:`.memory.release` waits until the next model is ready)
    is not available to the check: when it refuses, that memory is given back first and the
    check made again.
    """
    from mlx_lm import load

    folder = model_folder(source, models_dir, allow_download=allow_download)
    if headroom_gb is not None and Path(folder).is_dir():
        fits(source.model_id, Path(folder), headroom_gb)
    logger.info("loading %s from %s", source.model_id, folder)
    try:
        model, tokenizer = load(
            folder,
            tokenizer_config=source.tokenizer_config or None,
            model_config=source.model_config or None,
            lazy=True,
        )
        evaluate_weights(model, current_sink())
    except Exception as exc:  # corrupt weights, a bad config.json, an unknown architecture...
        logger.warning("loading %s from %s failed", source.model_id, folder, exc_info=True)
        raise ModelUnavailable(
            f"model {source.model_id!r} failed to load",
            detail=f"{folder}: {type(exc).__name__}: {exc}",
        ) from exc
    return model, tokenizer


def fits(model_id: str, folder: Path, headroom_gb: float) -> None:
    """:func:`.memory.check_fits`, again after :func:`.memory.release` when it refuses."""
    try:
        check_fits(model_id, folder, headroom_gb)
    except ModelUnavailable:
        release()
        check_fits(model_id, folder, headroom_gb)


def evaluate_weights(model: Any, report: Sink | None) -> None:
    """Read every parameter of ``model`` into memory (what ``mlx_lm.load(lazy=False)`` does
    in one call), about :data:`WEIGHTS_GROUP_BYTES` at a time, reporting after each group."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    arrays = [array for _, array in tree_flatten(model.parameters())]
    total, size = len(arrays), sum(array.nbytes for array in arrays)
    started = time.monotonic()
    done = done_bytes = 0

    def tick() -> None:
        if report is not None:
            elapsed = time.monotonic() - started
            report(Progress(WEIGHTS, done, total, done_bytes, size, elapsed, "loading weights"))

    tick()
    group: list[Any] = []
    grouped = 0
    for index, array in enumerate(arrays, start=1):
        group.append(array)
        grouped += array.nbytes
        if grouped >= WEIGHTS_GROUP_BYTES or index == total:
            mx.eval(group)
            done, done_bytes = index, done_bytes + grouped
            group, grouped = [], 0
            tick()
