"""Logprob entries: exact token bytes, sorted top lists, the sampled token's own value."""

from __future__ import annotations

import math

import pytest
from support import require_module

from ddx_llm.plugins.mlx.logprobs import FLOOR, TokenTexts, gpt2_byte_decoder, token_logprob

mx = require_module("mlx.core")


def test_byte_decoder_matches_mlx_lms_table():
    from mlx_lm.tokenizer_utils import _byte_decoder

    assert gpt2_byte_decoder() == _byte_decoder()
    assert sorted(gpt2_byte_decoder().values()) == list(range(256))


@pytest.mark.model
def test_token_bytes_are_exact_even_for_part_of_a_character(tokenizer):
    texts = TokenTexts(tokenizer)
    assert texts.kind == "bpe"
    ids = tokenizer.encode("😀 é", add_special_tokens=False)
    pieces = [texts(token) for token in ids]
    assert b"".join(bytes(raw) for _, raw in pieces) == "😀 é".encode()
    assert "\ufffd" in pieces[0][0]  # the first token holds only part of the emoji
    assert texts(tokenizer.encode(" capital", add_special_tokens=False)[0]) == (
        " capital", list(b" capital"),
    )  # fmt: skip
    assert texts(tokenizer.eos_token_id)[0] == "<|im_end|>"


@pytest.mark.model
def test_top_logprobs_are_sorted_and_the_chosen_entry_is_the_sampled_token(tokenizer):
    texts = TokenTexts(tokenizer)
    logits = mx.array([0.0, 3.0, 2.0, 1.0, -math.inf] + [-50.0] * 95)
    logprobs = logits - mx.logsumexp(logits)
    entry = token_logprob(logprobs, 3, 3, texts)  # a sampler may pick a token that is not top-1
    assert entry.token == texts(3)[0] and entry.bytes == texts(3)[1]
    assert entry.logprob == pytest.approx(logprobs[3].item())
    assert [t.token for t in entry.top_logprobs] == [texts(i)[0] for i in (1, 2, 3)]
    values = [t.logprob for t in entry.top_logprobs]
    assert values == sorted(values, reverse=True)
    assert token_logprob(logprobs, 4, 0, texts).logprob == FLOOR  # -inf has no JSON form
    half = token_logprob(logprobs.astype(mx.bfloat16), 1, 1, texts)  # bf16 models' logprobs
    assert half.top_logprobs[0].token == texts(1)[0]
