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
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .gguf_tokenizer import ConversionError, meta_get, meta_value, write_tokenizer
from .progress import CONVERT, ConsoleProgress, Progress, Sink, current_sink
from .safetensors_file import write_safetensors

__all__ = ["ConversionError", "convert_gguf", "is_complete", "llama_config", "map_tensor_name"]

logger = logging.getLogger(__name__)

MARKER_FILE = "ddx-conversion.json"
CONVERTER_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
REQUIRED_METADATA = (
    "llama.embedding_length",
    "llama.block_count",
    "llama.attention.head_count",
    "llama.feed_forward_length",
    "llama.attention.layer_norm_rms_epsilon",
)

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TENSOR_NAME = re.compile(r"^(?:blk\.(\d+)\.)?(\w+)\.(weight|scales|biases|bias)$")


def map_tensor_name(name: str) -> str:
    """Map a llama.cpp tensor name to mlx-lm's, e.g. ``blk.3.attn_q.scales`` ->
    ``model.layers.3.self_attn.q_proj.scales``. Raises ``ConversionError`` for names the
    mlx-lm llama model has no place for (e.g. ``rope_freqs``)."""
    match = _TENSOR_NAME.match(name)
    table = _LAYER_NAMES if match and match[1] is not None else _GLOBAL_NAMES
    if not match or match[2] not in table:
        raise ConversionError(f"GGUF tensor {name!r} has no counterpart in mlx-lm's llama model")
    layer, base, suffix = match.groups()
    prefix = f"model.layers.{layer}." if layer is not None else ""
    return f"{prefix}{table[base]}.{suffix}"


def _float32_text(value: float) -> float:
    """Shortest decimal that reads back as the same float32 (1e-05, not 9.99999974e-06)."""
    import numpy as np

    return float(str(np.float32(value)))


def llama_config(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The mlx-lm ``config.json`` fields that follow from ``llama.*`` GGUF metadata alone.

    Raises ``ConversionError`` for a non-llama GGUF or one missing ``REQUIRED_METADATA``
    (all missing keys are named at once).
    """
    arch = meta_get(metadata, "general.architecture")
    if arch != "llama":
        raise ConversionError(
            f"GGUF architecture is {arch!r} (general.architecture); only 'llama' is supported"
        )
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ConversionError(f"GGUF metadata is missing required keys: {', '.join(missing)}")
    hidden = meta_value(metadata, "llama.embedding_length")
    heads = meta_value(metadata, "llama.attention.head_count")
    head_dim = meta_get(metadata, "llama.rope.dimension_count", hidden // heads)
    tokens = meta_get(metadata, "tokenizer.ggml.tokens") or []
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": meta_value(metadata, "llama.block_count"),
        "intermediate_size": meta_value(metadata, "llama.feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta_get(metadata, "llama.attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": _float32_text(
            meta_value(metadata, "llama.attention.layer_norm_rms_epsilon")
        ),
        "vocab_size": meta_get(metadata, "llama.vocab_size", len(tokens)),
        "max_position_embeddings": meta_get(metadata, "llama.context_length", 2048),
        "rope_theta": _float32_text(meta_get(metadata, "llama.rope.freq_base", 10000.0)),
        "rope_traditional": True,
        "tie_word_embeddings": True,
        "bos_token_id": meta_get(metadata, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta_get(metadata, "tokenizer.ggml.eos_token_id"),
    }
    if meta_get(metadata, "llama.rope.scaling.type", "none") == "linear":
        factor = meta_value(metadata, "llama.rope.scaling.factor")
        config["rope_scaling"] = {"type": "linear", "factor": _float32_text(factor)}
    return {k: v for k, v in config.items() if v is not None}


def _input_dims(module: str, config: Mapping[str, Any]) -> int:
    """Unpacked input width of a quantizable module, from the model sizes."""
    if module.endswith("o_proj"):
        return config["num_attention_heads"] * config["head_dim"]
    if module.endswith("down_proj"):
        return config["intermediate_size"]
    return config["hidden_size"]


def quantization_config(
    arrays: Mapping[str, Any], config: Mapping[str, Any]
) -> dict[str, Any] | None:
    """mlx-lm's ``quantization`` entry for already-packed arrays, or None if none are.

    The most common (group_size, bits) becomes the default; modules packed differently
    (SmolLM2's 8-bit ``model.embed_tokens``) get a per-module entry, which mlx-lm's
    ``class_predicate`` looks up by module path before the default.
    """
    found: dict[str, tuple[int, int]] = {}
    for name, scales in arrays.items():
        if not name.endswith(".scales"):
            continue
        module = name.removesuffix(".scales")
        in_dims = _input_dims(module, config)
        bits = arrays[f"{module}.weight"].shape[-1] * 32 // in_dims
        found[module] = (in_dims // scales.shape[-1], bits)
    if not found:
        return None
    group_size, bits = Counter(found.values()).most_common(1)[0][0]
    quant: dict[str, Any] = {"group_size": group_size, "bits": bits}
    for module, (g, b) in sorted(found.items()):
        if (g, b) != (group_size, bits):
            quant[module] = {"group_size": g, "bits": b}
    return quant


def _check_layers(arrays: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Raise ``ConversionError`` naming up to five weights the model needs but lacks."""
    needed = ["model.embed_tokens.weight", "model.norm.weight"] + [
        f"model.layers.{i}.{module}.weight"
        for i in range(config["num_hidden_layers"])
        for module in _LAYER_NAMES.values()
    ]
    missing = [name for name in needed if name not in arrays]
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ConversionError(f"GGUF lacks tensors: {', '.join(missing[:5])}{more}")


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
    _check_layers(mapped, config)
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
