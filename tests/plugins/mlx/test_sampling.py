"""OpenAI sampling parameters → mlx-lm sampler settings and logits processors."""

from __future__ import annotations

import pytest
from support import require_module

from ddx_llm.errors import RequestInvalid
from ddx_llm.plugins.mlx.sampling import build_processors, build_sampler, sampling_params
from ddx_llm.schemas import ChatCompletionRequest

USER = [{"role": "user", "content": "hi"}]
DEFAULTS = {
    "prompt_tokens": 100,
    "context_window": 1000,
    "vocab_size": 500,
    "default_max_tokens": 256,
    "default_temperature": 0.7,
    "penalty_context_size": 32,
}


def params(**request):
    return sampling_params(ChatCompletionRequest(messages=USER, **request), **DEFAULTS)


def test_defaults_come_from_conf_and_the_limit_is_capped_by_the_context_left():
    p = params()
    assert (p.max_tokens, p.temperature, p.top_p, p.seed) == (256, 0.7, 1.0, None)
    tight = sampling_params(
        ChatCompletionRequest(messages=USER), **{**DEFAULTS, "prompt_tokens": 900}
    )
    assert tight.max_tokens == 100
    overflow = sampling_params(
        ChatCompletionRequest(messages=USER), **{**DEFAULTS, "prompt_tokens": 5000}
    )
    assert overflow.max_tokens == 1  # the core rejects it as context_too_long anyway


def test_request_values_win():
    p = params(
        max_tokens=9, max_completion_tokens=7, temperature=0, top_p=0.5, seed=-1, stop="END",
        presence_penalty=0.5, frequency_penalty=-1, logprobs=True, top_logprobs=4,
        logit_bias={"12": -100, "3": 2.5},
    )  # fmt: skip
    assert p.max_tokens == 7  # max_completion_tokens is the newer name
    assert (p.temperature, p.top_p, p.stops) == (0, 0.5, ("END",))
    assert p.seed == 2**64 - 1  # mx.random.seed takes unsigned values
    assert (p.presence_penalty, p.frequency_penalty, p.penalty_context_size) == (0.5, -1, 32)
    assert (p.logprobs, p.top_logprobs) == (True, 4)
    assert p.logit_bias == ((12, -100.0), (3, 2.5))


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        # keys that are not decimal token ids and biases outside [-100, 100] never get here:
        # the request schema refuses them (tests/reliability/test_input_schema.py)
        ({"logit_bias": {"500": 1}}, "logit_bias.500"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"top_logprobs": 3, "logprobs": False}, "top_logprobs"),
    ],
)
def test_values_this_model_cannot_take_are_rejected_naming_the_field(request_fields, field):
    with pytest.raises(RequestInvalid) as caught:
        params(**request_fields)
    assert caught.value.detail[0]["field"] == field


def test_processors_apply_bias_and_openai_penalties():
    mx = require_module("mlx.core")
    from mlx_lm.sample_utils import greedy_sampler

    assert build_sampler(params(temperature=0)) is greedy_sampler
    assert build_processors(params()) == []
    p = params(logit_bias={"4": 10}, presence_penalty=1.0, frequency_penalty=0.5)
    logits = mx.zeros((1, 8))
    history = mx.array([3, 3, 3, 5])
    for processor in build_processors(p):
        logits = processor(history, logits)
    values = logits[0].tolist()
    assert values[4] == 10  # bias
    assert values[3] == pytest.approx(-1.0 - 1.5)  # presence once, frequency per occurrence
    assert values[5] == pytest.approx(-1.0 - 0.5)
    assert values[0] == 0


def test_top_k_and_min_p_reach_the_sampler_and_a_k_past_the_vocabulary_keeps_every_token():
    p = params(top_k=40, min_p=0.05)
    assert (p.top_k, p.min_p) == (40, 0.05)
    assert (params().top_k, params().min_p) == (0, 0.0)
    assert params(top_k=500).top_k == 0  # the vocabulary has 500 tokens: nothing to cut
    assert params(top_k=499).top_k == 499


@pytest.mark.parametrize("seed", [None, 7])
def test_top_k_and_min_p_keep_only_the_tokens_they_allow(seed):
    """Sampled many times at a high temperature from one distribution: top_k 2 draws only the
    two most likely tokens; min_p 0.5 only those at least half as likely as the best; seeded
    or not (the seeded sampler applies the same filters)."""
    mx = require_module("mlx.core")
    probabilities = mx.array([[0.05, 0.4, 0.05, 0.3, 0.05, 0.15]])
    logprobs = mx.log(probabilities)
    for fields, allowed in (({"top_k": 2}, {1, 3}), ({"min_p": 0.5}, {1, 3}), ({}, set(range(6)))):
        sampler = build_sampler(params(temperature=2.0, seed=seed, **fields))
        drawn = {sampler(logprobs).item() for _ in range(300)}
        assert drawn == allowed, (fields, drawn)
