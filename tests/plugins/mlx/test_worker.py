"""The MLX worker thread on the real bundled model: cancelling, stopping, failing to load."""

from __future__ import annotations

import functools
import time

import pytest
from mlx_support import SHORT_CHAT

from ddx_llm.errors import ModelUnavailable
from ddx_llm.plugins.mlx.sampling import SamplingParams
from ddx_llm.plugins.mlx.source import ModelSource, load_model
from ddx_llm.plugins.mlx.worker import Failed, Finished, Job, ModelWorker, Piece

pytestmark = pytest.mark.model


def drain(job: Job, limit: float = 30) -> list:
    events: list = []
    deadline = time.monotonic() + limit
    while not any(isinstance(e, Finished | Failed) for e in events):
        assert time.monotonic() < deadline
        events.extend(job.wait())
    return events


@pytest.fixture
def worker(mlx_models_dir):
    source = ModelSource("SmolLM2-135M-Instruct", bundled="SmolLM2-135M-Instruct")
    loader = functools.partial(load_model, source, mlx_models_dir, allow_download=False)
    thread = ModelWorker(loader, "test-worker", prefill_step_size=4)
    thread.start()
    thread.tokenizer = thread.loaded.result(timeout=60)
    yield thread
    thread.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_a_cancelled_job_stops_at_a_prompt_step_before_any_token(worker):
    """The cancel flag is checked by mlx-lm's prompt-progress callback, before the prompt and
    after each 4-token step of it; a job cancelled while queued is stopped at the first check
    (deterministic, unlike timing a cancel into the middle of the prompt)."""
    prompt = worker.tokenizer.apply_chat_template(SHORT_CHAT, add_generation_prompt=True)
    first = worker.submit(Job(prompt, SamplingParams(max_tokens=2, temperature=0)))
    queued = worker.submit(Job(prompt, SamplingParams(max_tokens=50, temperature=0)))
    queued.cancel.set()
    events = drain(first)
    assert [type(e) for e in events] == [Piece, Piece, Finished]
    assert events[-1] == Finished("length", len(prompt), 2)
    assert "".join(e.text for e in events[:-1]) == "The capital"
    assert drain(queued) == [Finished("cancelled", len(prompt), 0)]
    assert worker.tokens_generated == 2
    assert worker.requests_done == 2


def test_a_stopped_worker_takes_no_jobs(worker):
    worker.stop()
    worker.join(30)
    assert not worker.is_alive()
    with pytest.raises(ModelUnavailable):
        worker.submit(Job([1, 2, 3], SamplingParams(max_tokens=1, temperature=0)))


def test_a_loader_error_reaches_the_caller_and_ends_the_thread(tmp_path):
    source = ModelSource("absent", path=tmp_path / "absent")
    loader = functools.partial(load_model, source, tmp_path, allow_download=False)
    thread = ModelWorker(loader, "failing-worker")
    thread.start()
    with pytest.raises(ModelUnavailable, match="no model folder"):
        thread.loaded.result(timeout=60)
    thread.join(30)
    assert not thread.is_alive()
