"""GGUF metadata access and rebuilding a Hugging Face tokenizer from a GGUF vocabulary.

Only the byte-level BPE vocabularies llama.cpp calls ``gpt2`` are supported, with the
pre-tokenizers listed in ``PRE_TOKENIZERS``; anything else raises ``ConversionError``
rather than writing a tokenizer whose ids silently differ from the model's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# llama.cpp's token types (llama_token_type in llama.h).
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

_ISOLATED_DIGITS = {"type": "Digits", "individual_digits": True}
_BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}
# llama.cpp `tokenizer.ggml.pre` value -> Hugging Face pre-tokenizer steps that give the same ids.
PRE_TOKENIZERS: dict[str, list[dict[str, Any]]] = {
    "smollm": [_ISOLATED_DIGITS, _BYTE_LEVEL],
    "gpt2": [_BYTE_LEVEL],
    "default": [_BYTE_LEVEL],
}


class ConversionError(ValueError):
    """A GGUF file cannot be converted: wrong architecture, missing or unsupported metadata."""


def meta_value(metadata: Mapping[str, Any], key: str) -> Any:
    """Return ``metadata[key]`` as a plain Python value (str, int, float, bool or list).

    ``mx.load`` returns scalars and numeric arrays as ``mx.array`` and string arrays as
    lists of str; both shapes are accepted. Raises ``ConversionError`` naming the key when
    it is absent.
    """
    if key not in metadata:
        raise ConversionError(f"GGUF metadata is missing required key {key!r}")
    value = metadata[key]
    if hasattr(value, "tolist"):  # mx.array or numpy scalar/array
        return value.tolist()
    return value


def meta_get(metadata: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Like ``meta_value`` but return ``default`` when the key is absent."""
    return meta_value(metadata, key) if key in metadata else default


def _pre_tokenizer(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The pre-tokenizer JSON for the GGUF's ``tokenizer.ggml.pre``; raises for unknown ones."""
    pre = meta_get(metadata, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ConversionError(
            f"unsupported GGUF pre-tokenizer {pre!r} (tokenizer.ggml.pre); "
            f"supported: {', '.join(sorted(PRE_TOKENIZERS))}"
        )
    steps = PRE_TOKENIZERS[pre]
    return steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": steps}


def build_tokenizer_json(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Build the ``tokenizer.json`` document for a ``gpt2``-model GGUF vocabulary.

    Control tokens (type 3) become special added tokens and user-defined tokens (type 4)
    plain added tokens, so that e.g. ``<|im_start|>`` always encodes to its own id.
    """
    model = meta_value(metadata, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ConversionError(
            f"unsupported GGUF tokenizer model {model!r} (tokenizer.ggml.model); "
            "only byte-level BPE ('gpt2') is supported"
        )
    tokens = list(meta_value(metadata, "tokenizer.ggml.tokens"))
    merges = list(meta_value(metadata, "tokenizer.ggml.merges"))
    types = meta_get(metadata, "tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise ConversionError(
            f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )
    added = [
        {
            "id": i,
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": kind == TOKEN_CONTROL,
        }
        for i, (tok, kind) in enumerate(zip(tokens, types, strict=True))
        if kind in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer(metadata),
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": False,
            "use_regex": True,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": [m.split(" ", 1) for m in merges],
        },
    }


def _token(tokens: list[str], metadata: Mapping[str, Any], key: str) -> str | None:
    """The token text whose id is stored under ``key``, or None when the key is absent."""
    token_id = meta_get(metadata, key)
    if token_id is None:
        return None
    if not 0 <= token_id < len(tokens):
        raise ConversionError(f"{key} = {token_id} is outside the vocabulary")
    return tokens[token_id]


def build_tokenizer_config(
    metadata: Mapping[str, Any],
    *,
    chat_template: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build ``tokenizer_config.json``: special tokens, chat template and BOS/EOS policy.

    ``chat_template`` replaces the GGUF's ``tokenizer.chat_template``; ``overrides`` is
    merged last and wins over everything. ``tokenizer_class`` is the generic fast
    tokenizer on purpose: transformers' ``GPT2Tokenizer`` would replace the pre-tokenizer
    (dropping e.g. digit splitting) with its own.
    """
    tokens = list(meta_value(metadata, "tokenizer.ggml.tokens"))
    types = meta_get(metadata, "tokenizer.ggml.token_type") or []
    control = [tok for tok, kind in zip(tokens, types, strict=False) if kind == TOKEN_CONTROL]
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta_get(metadata, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta_get(metadata, "tokenizer.ggml.add_eos_token", False)),
        "bos_token": _token(tokens, metadata, "tokenizer.ggml.bos_token_id"),
        "eos_token": _token(tokens, metadata, "tokenizer.ggml.eos_token_id"),
        "unk_token": _token(tokens, metadata, "tokenizer.ggml.unknown_token_id"),
        "pad_token": _token(tokens, metadata, "tokenizer.ggml.padding_token_id"),
        "additional_special_tokens": control,
        "clean_up_tokenization_spaces": False,
        "model_max_length": meta_get(metadata, "llama.context_length", 2048),
    }
    template = chat_template or meta_get(metadata, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    config = {k: v for k, v in config.items() if v is not None}
    config.update(overrides or {})
    return config


def special_tokens_map(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``special_tokens_map.json`` matching a tokenizer config."""
    keys = ("bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens")
    return {k: config[k] for k in keys if k in config}


def write_tokenizer(
    metadata: Mapping[str, Any],
    folder: Path,
    *,
    chat_template: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> int:
    """Write the three tokenizer files into ``folder``; return the vocabulary size.

    The JSON is round-tripped through the ``tokenizers`` library before it is written, so
    a document that library cannot load never reaches disk.
    """
    from tokenizers import Tokenizer

    document = json.dumps(build_tokenizer_json(metadata), ensure_ascii=False)
    tokenizer = Tokenizer.from_str(document)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = build_tokenizer_config(metadata, chat_template=chat_template, overrides=overrides)
    _write_json(folder / "tokenizer_config.json", config)
    _write_json(folder / "special_tokens_map.json", special_tokens_map(config))
    return tokenizer.get_vocab_size(with_added_tokens=True)


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` as indented UTF-8 JSON."""
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
