"""Convert a llama-architecture GGUF file into a folder ``mlx_lm.load`` can open.

MLX reads Q4_0/Q4_1/Q8_0 GGUF tensors directly as its own quantized triples (packed
``weight`` + ``scales`` + ``biases``), so the arrays are renamed and saved as they are:
no dequantization, no requantization. Rows of q/k stay in llama.cpp's interleaved-RoPE
order, which is why the config says ``rope_traditional: true``.

Progress (:mod:`.progress`, phase ``convert``): reading the GGUF, then each tensor written
(tensors done / total, bytes, elapsed) — a bar on a terminal for ``ddx-llm convert``, the
``/health`` fraction and log lines when a model load converts the bundled model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .gguf_tokenizer import ConversionError, write_tokenizer
from .llama_layout import check_layers, llama_config, map_tensor_name, quantization_config
from .progress import CONVERT, ConsoleProgress, Progress, Sink, current_sink
from .safetensors_file import write_safetensors

__all__ = ["ConversionError", "convert_gguf", "is_complete"]

logger = logging.getLogger(__name__)

MARKER_FILE = "ddx-conversion.json"
CONVERTER_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
MIN_MLX = (0, 32)
"""MLX before 0.32 reads Q4_1 GGUF tensors wrongly (ml-explore/mlx#3664): the converted model
then answers gibberish without any error, so conversion refuses to run there."""


def check_mlx_version() -> None:
    """Raise ConversionError when the installed MLX cannot read GGUF quantized tensors right."""
    import mlx.core as mx

    version = tuple(int(part) for part in mx.__version__.split(".")[:2] if part.isdigit())
    if version < MIN_MLX:
        raise ConversionError(
            f"mlx {mx.__version__} reads Q4_1 GGUF tensors wrongly (ml-explore/mlx#3664); "
            f"convert with mlx >= {'.'.join(map(str, MIN_MLX))} (the mlx extra's environment)"
        )


def _load_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a GGUF file with MLX: (arrays, metadata)."""
    import mlx.core as mx

    check_mlx_version()
    return mx.load(str(path), return_metadata=True)


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds every file ``mlx_lm.load`` needs (see ``REQUIRED_FILES``)."""
    return folder.is_dir() and all((folder / name).is_file() for name in REQUIRED_FILES)


@contextlib.contextmanager
def _conversion_lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock for converting into ``dest``, shared across processes."""
    with open(dest.parent / f".{dest.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_tmp(dest: Path) -> None:
    """Delete temporary folders left by interrupted conversions into ``dest``.

    Called under the lock, so no live conversion owns any of them.
    """
    for leftover in dest.parent.glob(f".{dest.name}.tmp-*"):
        logger.warning("removing leftover of an interrupted conversion: %s", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def _write_model(
    gguf_path: Path,
    folder: Path,
    chat_template: str | None,
    tokenizer_overrides: Mapping[str, Any] | None,
    report: Sink,
) -> None:
    """Write every file of the converted model into the (empty, existing) ``folder``; the
    tensors first, one by one, each reported to ``report``."""
    started = time.monotonic()

    def tick(step: str, done: int, total: int, written: int, size: int) -> None:
        report(Progress(CONVERT, done, total, written, size, time.monotonic() - started, step))

    tick(f"reading {gguf_path.name}", 0, 0, 0, gguf_path.stat().st_size)
    arrays, metadata = _load_gguf(gguf_path)
    config = llama_config(metadata)
    mapped = {map_tensor_name(name): array for name, array in arrays.items()}
    del arrays
    check_layers(mapped, config)
    if "lm_head.weight" in mapped:
        config["tie_word_embeddings"] = False
    if any(name.endswith("self_attn.q_proj.bias") for name in mapped):
        config["attention_bias"] = True
    if any(name.endswith("mlp.up_proj.bias") for name in mapped):
        config["mlp_bias"] = True
    quant = quantization_config(mapped, config)
    if quant is not None:
        config["quantization"] = quant
        config["quantization_config"] = quant
    logger.info("mapped %d arrays (quantization: %s)", len(mapped), quant)

    total, size = len(mapped), sum(array.nbytes for array in mapped.values())
    tick("writing tensors", 0, total, 0, size)
    write_safetensors(
        folder / "model.safetensors",
        mapped,
        {"format": "mlx"},
        on_tensor=lambda done, written: tick("writing tensors", done, total, written, size),
    )
    del mapped
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    vocab = write_tokenizer(
        metadata, folder, chat_template=chat_template, overrides=tokenizer_overrides
    )
    logger.info("tokenizer built: %d tokens", vocab)
    stat = gguf_path.stat()
    marker = {
        "converter_version": CONVERTER_VERSION,
        "source": str(gguf_path),
        "source_size": stat.st_size,
        "converted_at": time.time(),
    }
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def convert_gguf(
    gguf_path: Path,
    dest: Path,
    *,
    chat_template: str | None = None,
    tokenizer_overrides: dict | None = None,
    progress: Sink | None = None,
) -> Path:
    """Convert ``gguf_path`` into the mlx-lm model folder ``dest`` and return ``dest``.

    A complete ``dest`` (``is_complete``) is reused untouched. Otherwise the model is
    written into a hidden sibling temp folder that is renamed onto ``dest`` only once
    everything is on disk, so ``dest`` is either absent or whole. Concurrent callers are
    serialised by a lock file next to ``dest``. Raises ``ConversionError`` for a GGUF
    that is not llama or lacks required metadata/tensors, ``FileExistsError`` if ``dest``
    is a non-empty folder that is not a complete model.

    ``progress`` receives the conversion's :class:`~.progress.Progress`; by default the sink
    of the enclosing :func:`~.progress.reporting_to` (a model load), else stderr
    (:class:`~.progress.ConsoleProgress`: a bar on a terminal, a line every 2 s otherwise).
    """
    gguf_path, dest = Path(gguf_path), Path(dest)
    if is_complete(dest):
        logger.info("reusing converted model at %s", dest)
        return dest
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(dest):
        if is_complete(dest):  # another process finished while we waited for the lock
            logger.info("reusing converted model at %s", dest)
            return dest
        if dest.exists() and any(dest.iterdir()):
            raise FileExistsError(f"{dest} exists but is not a complete model; remove it")
        _remove_stale_tmp(dest)
        started = time.monotonic()
        logger.info("converting %s -> %s", gguf_path, dest)
        tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            report = progress or current_sink() or ConsoleProgress()
            _write_model(gguf_path, tmp, chat_template, tokenizer_overrides, report)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s in %.2f s", dest.name, time.monotonic() - started)
    return dest
