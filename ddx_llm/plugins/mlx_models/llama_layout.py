"""How a llama-architecture GGUF file maps onto mlx-lm's llama model: tensor names, the
``config.json`` fields that follow from the GGUF metadata, and the quantization entry of arrays
that are already packed (:mod:`.convert` writes the folder)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from .gguf_tokenizer import ConversionError, meta_get, meta_value

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


def check_layers(arrays: Mapping[str, Any], config: Mapping[str, Any]) -> None:
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
