"""Memory: figures for ``/health``, giving memory back on unload, and the fit check before a load.

- :func:`figures`: MLX's active memory (live arrays), its buffer cache (freed arrays kept for
  reuse), its peak, and the process's resident set size, in MB.
- :func:`empty_cache`: once a model's last reference is dropped, empty MLX's buffer cache
  (``mx.clear_cache()``, which mlx-lm's server never calls on a model change) into the
  allocator, where the next model's weights reuse it; arrays still held by reference cycles are
  collected first.
- :func:`release`: give freed memory back to the system — collect garbage, empty MLX's cache
  and, on glibc, ``malloc_trim(0)``: MLX's CPU allocator frees with ``free()``, and glibc keeps
  freed heap pages mapped (measured: RSS stayed ~115 MB above its pre-load level after a 98 MB
  model was dropped and the cache cleared; ``malloc_trim`` returned it).  Right before a load
  this only costs time — the collection, and the pages given back are faulted in again while the
  weights are read — so a swap releases once the next model is ready, and before the load only
  when the fit check would refuse it otherwise.
- :func:`check_fits`: before ``mlx_lm.load``, the model's weights on disk plus
  ``[mlx] memory_headroom_gb`` must fit in the memory available (psutil's ``available``:
  ``MemAvailable`` on Linux, free + inactive pages on macOS) and, on Apple GPUs, in Metal's
  recommended working set (``mx.device_info()["max_recommended_working_set_size"]``).  Too large
  → 503 ``model_unavailable`` with the sizes in the detail, instead of the process being killed.

psutil is the one dependency this adds (``mlx`` extra): it reads both platforms' memory figures
and the process's RSS, which would otherwise be hand-parsed from ``/proc`` and ``vm_stat``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from pathlib import Path
from typing import Any

from ddx_llm.errors import ModelUnavailable

logger = logging.getLogger(__name__)

GB = 1e9
MB = 1e6
WEIGHT_PATTERNS = ("*.safetensors", "*.gguf", "*.npz")


def figures() -> dict[str, float]:
    """MLX active / cache / peak memory and process RSS, in MB (cheap: safe for ``/health``)."""
    import mlx.core as mx
    import psutil

    return {
        "active_mb": round(mx.get_active_memory() / MB, 1),
        "cache_mb": round(mx.get_cache_memory() / MB, 1),
        "peak_mb": round(mx.get_peak_memory() / MB, 1),
        "rss_mb": round(psutil.Process().memory_info().rss / MB, 1),
    }


def empty_cache(collect: bool = False) -> None:
    """Hand MLX's buffer cache to the allocator, for the next model to reuse (call once the
    model's last reference is dropped); ``collect`` first collects garbage — when reference
    cycles still hold the model's arrays."""
    import mlx.core as mx

    if collect:
        gc.collect()
    mx.clear_cache()


def release() -> None:
    """Return freed memory to the system (call once the model's last reference is dropped)."""
    gc.collect()
    empty_cache()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (macOS, musl): their allocators give memory back
    themselves."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def weights_bytes(folder: Path) -> int:
    """Size on disk of the model's weight files (what loading puts in memory)."""
    return sum(path.stat().st_size for pattern in WEIGHT_PATTERNS for path in folder.glob(pattern))


def memory_limits() -> list[tuple[str, int]]:
    """``[(what, bytes), ...]``: the memory a new model may use, by every limit that applies."""
    import mlx.core as mx
    import psutil

    limits = [("available memory", int(psutil.virtual_memory().available))]
    working_set = mx.device_info().get("max_recommended_working_set_size")
    if working_set:  # Apple GPUs only; the CPU device reports no memory keys
        limits.append(("Metal's recommended working set", int(working_set)))
    return limits


def check_fits(model_id: str, folder: Path, headroom_gb: float, freed: int = 0) -> None:
    """Raise ModelUnavailable when ``folder``'s weights plus ``headroom_gb`` exceed a limit.

    ``freed`` is memory the caller will release before loading (a resident model that is
    replaced), counted as available.
    """
    weights = weights_bytes(folder)
    if weights == 0:
        return  # no weight files: mlx-lm's own error says what is wrong
    needed = weights + headroom_gb * GB
    for what, limit in memory_limits():
        usable = limit + (freed if what == "available memory" else 0)
        if needed > usable:
            detail = (
                f"{model_id} needs {weights / GB:.2f} GB of weights + {headroom_gb:.2f} GB "
                f"headroom ([mlx] memory_headroom_gb) = {needed / GB:.2f} GB, but {what} is "
                f"{usable / GB:.2f} GB"
            )
            raise ModelUnavailable(f"model {model_id!r} does not fit in memory", detail=detail)
    logger.info(
        "%s: %.2f GB of weights + %.2f GB headroom fits", model_id, weights / GB, headroom_gb
    )
