"""Token log probabilities in OpenAI's shape, from mlx-lm's per-token ``logprobs`` vector.

``GenerationResponse.logprobs`` is the log-softmax over the whole vocabulary after the logits
processors (bias, penalties) and before temperature / top-p: the distribution the sampler drew
from at temperature 1.  The sampled token's entry is its own log probability (not, as in mlx-lm's
server, an arbitrary member of the top set), and ``top_logprobs`` are the ``n`` most likely tokens
sorted by decreasing log probability.  Each token's ``bytes`` are its exact UTF-8 bytes (a token
may hold part of a character); ``token`` is those bytes decoded with replacement characters.

Runs in the MLX worker thread: array work must stay on the thread that owns the model.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from ddx_llm.schemas import TokenLogprob, TopLogprob

FLOOR = -9999.0
"""Stands in for -inf/NaN (JSON has no infinity); OpenAI uses the same floor."""

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def gpt2_byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable character → byte table (GPT-2's ``bytes_to_unicode``,
    inverted).  Written out because transformers 5 no longer exports it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {chr(b): b for b in printable}
    shift = 0
    for byte in range(256):
        if byte not in printable:
            table[chr(256 + shift)] = byte
            shift += 1
    return table


class TokenTexts:
    """Token id → ``(text, bytes)``, cached.  Knows byte-level BPE (GPT-2, Llama 3, Qwen,
    SmolLM) and SentencePiece pieces (``▁`` spaces, ``<0xNN>`` bytes); other tokenizers fall
    back to decoding the single token."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        kind = type(tokenizer.detokenizer).__name__
        self.kind = {"BPEStreamingDetokenizer": "bpe", "SPMStreamingDetokenizer": "spm"}.get(kind)
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token: int) -> tuple[str, list[int]]:
        cached = self._cache.get(token)
        if cached is None:
            raw = self._bytes(token)
            cached = self._cache[token] = (raw.decode("utf-8", errors="replace"), list(raw))
        return cached

    def _bytes(self, token: int) -> bytes:
        if self.kind is not None and token < len(self.tokenizer):
            piece = self.tokenizer.convert_ids_to_tokens(token)
            if self.kind == "bpe":
                table = gpt2_byte_decoder()
                return b"".join(
                    bytes([table[c]]) if c in table else c.encode("utf-8") for c in piece
                )
            match = _BYTE_PIECE.fullmatch(piece)
            if match:
                return bytes([int(match[1], 16)])
            return piece.replace("\u2581", " ").encode("utf-8")
        return self.tokenizer.decode([token]).encode("utf-8")


def _finite(value: float) -> float:
    return value if math.isfinite(value) and value > FLOOR else FLOOR


def token_logprob(logprobs: Any, token: int, top_n: int, texts: TokenTexts) -> TokenLogprob:
    """The OpenAI logprob entry of the sampled ``token`` from the ``(V,)`` array ``logprobs``."""
    import mlx.core as mx

    values = logprobs.astype(mx.float32)
    top: list[TopLogprob] = []
    if top_n > 0:
        top_n = min(top_n, values.shape[-1])
        ids = mx.argpartition(-values, kth=top_n - 1)[:top_n]
        pairs = sorted(
            zip(ids.tolist(), values[ids].tolist(), strict=True), key=lambda pair: -pair[1]
        )
        top = [_entry(TopLogprob, i, lp, texts) for i, lp in pairs]
    chosen = _entry(TokenLogprob, token, values[token].item(), texts)
    chosen.top_logprobs = top
    return chosen


def _entry(kind: type, token: int, logprob: float, texts: TokenTexts) -> Any:
    text, raw = texts(token)
    return kind(token=text, logprob=_finite(logprob), bytes=raw)
