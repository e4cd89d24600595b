"""The MLX worker thread on the real bundled model: continuous batching, the prompt cache,
cancelling one sequence, stopping, failing to load.

Prompt processing and decoding run at about 10 tokens/s on a 2-core CPU: prompts are ~20 tokens
and completions a few tokens.
"""

from __future__ import annotations

import functools
import threading
import time

import pytest
from mlx_support import SHORT_CHAT, STORY_CHAT

from ddx_llm.errors import ModelUnavailable
from ddx_llm.plugins.mlx.jobs import Failed, Finished, Job, Piece
from ddx_llm.plugins.mlx.loading import load_model
from ddx_llm.plugins.mlx.sampling import SamplingParams
from ddx_llm.plugins.mlx.worker import ModelWorker, WorkerOptions
from ddx_llm.plugins.mlx_models.source import ModelSource

pytestmark = pytest.mark.model

BUNDLED = ModelSource("SmolLM2-135M-Instruct", bundled="SmolLM2-135M-Instruct")


def chat(question: str) -> list[dict]:
    return [{"role": "system", "content": ""}, {"role": "user", "content": question}]


def drain(job: Job, limit: float = 60) -> list:
    events: list = []
    deadline = time.monotonic() + limit
    while not any(isinstance(e, Finished | Failed) for e in events):
        assert time.monotonic() < deadline
        events.extend(job.wait())
    return events


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, Piece))


def start_worker(models_dir, **options) -> ModelWorker:
    loader = functools.partial(load_model, BUNDLED, models_dir, allow_download=False)
    thread = ModelWorker(loader, "test-worker", WorkerOptions(**options))
    thread.start()
    thread.tokenizer = thread.loaded.result(timeout=60)
    return thread


def stop_worker(thread: ModelWorker) -> None:
    thread.stop()
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture
def worker(mlx_models_dir):
    thread = start_worker(mlx_models_dir, prefill_step_size=4)
    yield thread
    stop_worker(thread)


def prompt_of(worker: ModelWorker, messages: list[dict]) -> list[int]:
    return list(worker.tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def status_when(worker: ModelWorker, condition, limit: float = 60) -> dict:
    """Poll ``worker.status()`` from this thread, as ``/health`` does, until ``condition``
    holds; return that status."""
    deadline = time.monotonic() + limit
    while not condition(status := worker.status()):
        assert time.monotonic() < deadline, status
        time.sleep(0.001)
    return status


class StatusSampler(threading.Thread):
    """Reads ``worker.status()`` from another thread every millisecond while the ``with``
    block runs; ``samples`` holds ``(monotonic time just after the read, status)``."""

    def __init__(self, worker: ModelWorker) -> None:
        super().__init__(name="status-sampler", daemon=True)
        self.worker = worker
        self.samples: list[tuple[float, dict]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            status = self.worker.status()
            self.samples.append((time.monotonic(), status))
            self._done.wait(0.001)

    def __enter__(self) -> StatusSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()


def test_a_job_cancelled_while_queued_ends_unprocessed(worker):
    prompt = prompt_of(worker, SHORT_CHAT)
    first = worker.submit(Job(prompt, SamplingParams(max_tokens=2, temperature=0)))
    queued = Job(prompt, SamplingParams(max_tokens=50, temperature=0))
    queued.cancel.set()
    worker.submit(queued)
    events = drain(first)
    assert [type(e) for e in events] == [Piece, Piece, Finished]
    assert events[-1] == Finished("length", len(prompt), 2)
    assert text_of(events) == "The capital"
    assert drain(queued) == [Finished("cancelled", len(prompt), 0)]
    status = worker.status()
    assert (status["tokens_generated"], status["requests_done"], status["busy"]) == (2, 2, False)


REQUESTS = [
    # (question, sampling parameters): a stop string; logprobs
    ("What is the capital of France?", {"stops": (" of Fr",)}),
    ("Name a color.", {"logprobs": True, "top_logprobs": 2}),
]


def test_batched_sequences_equal_single_runs_and_a_cancel_removes_only_its_own(mlx_models_dir):
    """Greedy outputs of two prompts of different lengths (so the batch pads them), one with a
    stop string, one with logprobs, are the same batched as one by one (log probabilities
    included); a third sequence cancelled mid-generation leaves the batch without disturbing
    the others."""
    worker = start_worker(mlx_models_dir, max_batch=3, prompt_cache_entries=0)
    try:
        prompts = [prompt_of(worker, chat(question)) for question, _ in REQUESTS]
        params = [SamplingParams(max_tokens=5, temperature=0, **extra) for _, extra in REQUESTS]
        single = [drain(worker.submit(Job(p, s))) for p, s in zip(prompts, params, strict=True)]

        story = worker.submit(Job(prompt_of(worker, STORY_CHAT), SamplingParams(200, 0)))
        jobs = [worker.submit(Job(p, s)) for p, s in zip(prompts, params, strict=True)]
        # the story goes on until it is cancelled below, and the two others need a prefill and
        # five decode steps each: all three are in the batch together before any leaves it
        status_when(worker, lambda status: status["sequences"] == 3)
        first = story.wait()
        while not any(isinstance(e, Piece) for e in first):
            first += story.wait()
        story.cancel.set()
        batched = [drain(job) for job in jobs]
        story_events = first + drain(story)
    finally:
        stop_worker(worker)
    assert batched == single
    assert text_of(single[0]) == "The capital"
    assert single[0][-1].reason == "stop"
    assert all(len(e.logprobs) == 1 for e in single[1][:-2])  # the end token has none
    assert story_events[-1].reason == "cancelled"
    assert story_events[-1].completion_tokens < 5


def test_the_next_turn_reuses_the_cached_prompt_and_answers_the_same(mlx_models_dir):
    worker = start_worker(mlx_models_dir)
    try:
        turn1 = prompt_of(worker, SHORT_CHAT)
        events = drain(worker.submit(Job(turn1, SamplingParams(max_tokens=3, temperature=0))))
        messages = [
            *SHORT_CHAT,
            {"role": "assistant", "content": text_of(events)},
            {"role": "user", "content": "And Spain?"},
        ]
        turn2 = prompt_of(worker, messages)
        before = worker.status()["prompt_tokens_processed"]
        cached_run = drain(worker.submit(Job(turn2, SamplingParams(max_tokens=3, temperature=0))))
        processed = worker.status()["prompt_tokens_processed"] - before
        cache_status = worker.status()["prompt_cache"]
    finally:
        stop_worker(worker)
    reference = start_worker(mlx_models_dir, prompt_cache_entries=0)
    try:
        uncached_run = drain(reference.submit(Job(turn2, SamplingParams(3, temperature=0))))
        assert reference.status()["prompt_tokens_processed"] == len(turn2)
    finally:
        stop_worker(reference)
    finished = cached_run[-1]
    assert finished.cached_tokens >= len(turn1)  # the whole first turn came from the cache
    assert processed == len(turn2) - finished.cached_tokens
    assert cache_status["hits"] == 1 and cache_status["entries"] >= 1
    assert cached_run == [*uncached_run[:-1], finished]
    assert uncached_run[-1].cached_tokens == 0


def test_a_seed_gives_the_same_tokens_alone_and_batched(worker):
    """The seed drives the sequence's own random key: two seeded sequences in one batch sample
    the same tokens as the same request alone, and unseeded sampling is not replayed."""
    prompt = prompt_of(worker, STORY_CHAT)
    seeded = SamplingParams(max_tokens=4, temperature=1.5, seed=1234)
    alone = text_of(drain(worker.submit(Job(prompt, seeded))))
    jobs = [worker.submit(Job(prompt, seeded)) for _ in range(2)]
    unseeded = [worker.submit(Job(prompt, SamplingParams(4, 1.5))) for _ in range(2)]
    texts = [text_of(drain(job)) for job in jobs]
    others = [text_of(drain(job)) for job in unseeded]
    assert texts == [alone, alone]
    assert others[0] != others[1] or others[0] != alone


def test_a_stopped_worker_takes_no_jobs_and_frees_the_model(worker, mlx_models_dir):
    """Stopped, the worker frees every array of its model and empties MLX's cache into the
    allocator; giving the memory back to the system (``memory.release``) is its owner's."""
    from ddx_llm.plugins.mlx_models import memory

    weights = memory.weights_bytes(mlx_models_dir / BUNDLED.bundled) / 1e6
    loaded = memory.figures()  # figures are process-wide: other fixtures may hold arrays
    worker.stop()
    worker.join(30)
    assert not worker.is_alive()
    with pytest.raises(ModelUnavailable):
        worker.submit(Job([1, 2, 3], SamplingParams(max_tokens=1, temperature=0)))
    assert worker.dropped is not None
    assert worker.dropped["active_mb"] < loaded["active_mb"] - 0.95 * weights
    freed = memory.figures()
    assert freed["cache_mb"] == 0
    memory.release()
    released = memory.figures()
    # RSS is process-wide and the allocator keeps some freed pages: most, not all, come back
    # (0.76-0.9 of the weights measured here); MLX's own figure above is the exact one
    assert released["rss_mb"] < loaded["rss_mb"] - 0.7 * weights


LONG_STEP = 0.3
"""Seconds a step must visibly last; ``/readyz`` compares the same figure with
``[mlx] stall_seconds``."""


def test_a_long_step_shows_in_the_heartbeat_until_the_worker_moves(mlx_models_dir):
    """A prompt processed in one chunk (fixed-size steps: ``prefill_step_seconds`` 0) is one
    scheduler step: while it runs the heartbeat stands still, so ``seconds_since_step`` grows
    past LONG_STEP, counted from the job's admission (not from the idle worker's last step);
    once the worker is idle it is None again.

    The prompt doubles until its single step lasts LONG_STEP on this machine; on a 2-core CPU
    (~15 prompt tokens/s) the first one does.  A job lasting three times that without any step
    showing it long means the heartbeat is wrong, and fails."""
    worker = start_worker(
        mlx_models_dir, prefill_step_size=8192, prefill_step_seconds=0, prompt_cache_entries=0
    )
    try:
        words = 8
        while True:
            prompt = prompt_of(worker, chat("Count the cats:" + " cat" * words))
            time.sleep(0.1)  # idle: the worker's last step is older than the job
            with StatusSampler(worker) as sampler:
                submitted = time.monotonic()
                events = drain(worker.submit(Job(prompt, SamplingParams(1, temperature=0))))
                took = time.monotonic() - submitted
            busy = [(t - submitted, s) for t, s in sampler.samples if s["busy"]]
            longest = max((s["seconds_since_step"] for _, s in busy), default=0.0)
            if longest >= LONG_STEP:
                break
            assert took < 3 * LONG_STEP and words < 4096, (words, took, longest)
            words *= 2
        idle = (worker.status(), worker.stalled_for())
    finally:
        stop_worker(worker)
    assert events[-1] == Finished("length", len(prompt), 1)
    assert all(s["sequences"] == 1 for _, s in busy)
    # the heartbeat starts at the admission: it is never older than the job (status rounds it)
    assert all(s["seconds_since_step"] <= since + 0.001 for since, s in busy)
    assert (idle[0]["busy"], idle[0]["seconds_since_step"], idle[1]) == (False, None, 0.0)


def test_a_loader_error_reaches_the_caller_and_ends_the_thread(tmp_path):
    source = ModelSource("absent", path=tmp_path / "absent")
    loader = functools.partial(load_model, source, tmp_path, allow_download=False)
    thread = ModelWorker(loader, "failing-worker")
    thread.start()
    with pytest.raises(ModelUnavailable, match="no model folder"):
        thread.loaded.result(timeout=60)
    thread.join(30)
    assert not thread.is_alive()
