"""The prefill pacer's arithmetic: how many prompt tokens the next step gets from the speed it
measured (figures fed in, no clock: the real model's steps are timed in
tests/reliability/test_prefill_disconnect.py)."""

from __future__ import annotations

import pytest

from ddx_llm.plugins.mlx.pacing import INITIAL_TOKENS, PrefillPacer


def test_before_any_measurement_a_step_processes_the_initial_tokens_shared():
    pacer = PrefillPacer(target=1.0, upper=512)
    assert pacer.rate is None
    assert pacer.chunk(prefilling=1, generating=False) == INITIAL_TOKENS
    assert pacer.chunk(prefilling=4, generating=False) == INITIAL_TOKENS // 4
    assert pacer.chunk(prefilling=64, generating=False) == 1  # never nothing


def test_the_chunk_fills_the_target_at_the_measured_speed():
    pacer = PrefillPacer(target=1.0, upper=512)
    pacer.observe(prompt_tokens=16, seconds=1.6, generating=False)  # 10 tokens/s
    assert pacer.rate == pytest.approx(10)
    assert pacer.chunk(prefilling=1, generating=False) == 10
    assert pacer.chunk(prefilling=3, generating=False) == 3  # the step is shared
    fast = PrefillPacer(target=0.5, upper=512)
    fast.observe(prompt_tokens=16, seconds=0.004, generating=False)  # 4,000 tokens/s
    assert fast.chunk(prefilling=1, generating=False) == 512  # the upper bound
    assert fast.chunk(prefilling=2, generating=False) == 512
    assert fast.chunk(prefilling=8, generating=False) == 250


def test_the_speed_follows_new_measurements_weighted_by_tokens_and_time():
    pacer = PrefillPacer(target=1.0, upper=512)
    pacer.observe(prompt_tokens=10, seconds=1.0, generating=False)
    pacer.observe(prompt_tokens=10, seconds=2.0, generating=False)  # slower: attention grows
    # decayed sums, the past halved per target second measured: 2 s keep a quarter
    assert pacer.rate == pytest.approx((0.25 * 10 + 10) / (0.25 * 1 + 2))
    for _ in range(8):
        pacer.observe(prompt_tokens=5, seconds=1.0, generating=False)
    assert pacer.rate == pytest.approx(5, rel=0.01)
    pacer.observe(prompt_tokens=1, seconds=0.0001, generating=False)  # one tiny, fast step
    assert pacer.rate < 5.6  # barely moves the estimate


def test_decoding_in_the_same_step_leaves_prefill_the_rest_of_the_target():
    pacer = PrefillPacer(target=1.0, upper=512)
    pacer.observe(prompt_tokens=0, seconds=0.4, generating=True)  # a decode-only step
    pacer.observe(prompt_tokens=0, seconds=0.4, generating=True)
    decode = 0.3  # smoothed: 0.5 * 0.2 + 0.5 * 0.4
    pacer.observe(prompt_tokens=20, seconds=2.0 + decode, generating=True)  # 10 tokens/s
    assert pacer.rate == pytest.approx(10)
    assert pacer.chunk(prefilling=1, generating=True) == int(10 * (1.0 - decode))
    assert pacer.chunk(prefilling=1, generating=False) == 10
    slow = PrefillPacer(target=1.0, upper=512)
    for _ in range(4):
        slow.observe(prompt_tokens=0, seconds=3.0, generating=True)  # decoding alone > target
    slow.observe(prompt_tokens=40, seconds=4.0, generating=False)
    assert slow.chunk(prefilling=1, generating=True) == 2  # a quarter of the target still


def test_target_zero_means_fixed_chunks_of_the_upper_bound():
    pacer = PrefillPacer(target=0, upper=512)
    pacer.observe(prompt_tokens=512, seconds=50.0, generating=False)
    assert pacer.chunk(prefilling=3, generating=True) == 512


def test_status_reports_speed_chunk_and_steps():
    pacer = PrefillPacer(target=1.0, upper=512)
    assert pacer.status()["prefill_tokens_per_second"] is None
    pacer.observe(prompt_tokens=14, seconds=1.25, generating=False)
    pacer.chunk(prefilling=1, generating=False)
    pacer.observe(prompt_tokens=0, seconds=0.1, generating=True)
    assert pacer.status() == {
        "prefill_step_seconds": 1.0,
        "prefill_tokens_per_second": 11.2,
        "prefill_chunk": 11,
        "last_step_seconds": 0.1,
        "longest_step_seconds": 1.25,
    }
