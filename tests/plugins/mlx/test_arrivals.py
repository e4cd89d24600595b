"""Prompts that come together are prefilled together: a step that starts new prompts first
waits (briefly) for the prompts announced meanwhile.  The worker's gathering, without a model:
a recording engine stands in for the batch."""

from __future__ import annotations

import threading
import time

from ddx_llm.plugins.mlx import worker as worker_module
from ddx_llm.plugins.mlx.jobs import Job
from ddx_llm.plugins.mlx.sampling import SamplingParams
from ddx_llm.plugins.mlx.worker import Arrivals, ModelWorker


class RecordingEngine:
    def __init__(self) -> None:
        self.admitted: list[Job] = []

    def admit(self, job: Job) -> None:
        self.admitted.append(job)


def job() -> Job:
    return Job([1, 2, 3], SamplingParams(max_tokens=1, temperature=0.0))


def test_announcements_are_pending_until_forgotten_or_expired():
    arrivals = Arrivals()
    assert not arrivals.pending()
    first, second = arrivals.announce(), arrivals.announce()
    assert first != second and arrivals.pending()
    arrivals.forget(first)
    assert arrivals.pending()
    arrivals.forget(second)
    arrivals.forget(second)  # twice: harmless (a dropped request's finalizer, after its submit)
    assert not arrivals.pending()
    arrivals._due[arrivals.announce()] = time.monotonic() - 1  # announced long ago: forgotten
    assert not arrivals.pending()


def test_a_step_waits_for_the_prompt_announced_meanwhile():
    worker = ModelWorker(lambda: (None, None), "gather-test")  # never started: no model
    engine = RecordingEngine()
    ticket = worker.arrivals.announce()  # another request is rendering its prompt
    late = job()

    def arrive() -> None:
        time.sleep(0.05)
        worker._jobs.put(late)
        worker.arrivals.forget(ticket)  # what submit() does

    threading.Thread(target=arrive).start()
    assert worker._gather(engine) is True
    assert engine.admitted == [late]  # it joins before the step, not a step later
    assert not worker.arrivals.pending()


def test_the_wait_is_bounded_and_nothing_announced_means_no_wait():
    worker = ModelWorker(lambda: (None, None), "gather-test")
    engine = RecordingEngine()
    started = time.monotonic()
    assert worker._gather(engine) is True and engine.admitted == []
    assert time.monotonic() - started < worker_module.GATHER_SECONDS * 0.8
    worker.arrivals.announce()  # a request that will never come (dropped before it generated)
    started = time.monotonic()
    assert worker._gather(engine) is True
    assert time.monotonic() - started < worker_module.GATHER_SECONDS + 0.2


def test_a_stop_during_the_wait_is_obeyed():
    worker = ModelWorker(lambda: (None, None), "gather-test")
    worker.arrivals.announce()
    worker.stop()
    assert worker._gather(RecordingEngine()) is False
