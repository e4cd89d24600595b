"""The MLX worker: one thread that loads one model and runs every generation on it.

MLX streams, lazy arrays and the random generator belong to the thread that made them (mlx
0.32), so a single long-lived thread does all MLX work: it loads the model, creates its stream,
and drives the :class:`~.engine.BatchEngine` (continuous batching of every running request).
Results leave it as plain Python values on each :class:`~.jobs.Job`'s queue.

Heartbeat: ``last_step`` is stamped after every scheduler step; while sequences are in the batch,
:meth:`ModelWorker.stalled_for` is the time since then — a step stuck in MLX, a deadlock, a
wedged device all show as a growing number, which the plugin's readiness hook turns into
``/readyz`` 503 past ``[mlx] stall_seconds``.

Stopping (unload) ends the loop: sequences still in the batch fail with ``model_unavailable``
(the host drains requests before unloading, so normally there are none), the engine drops the
model, its generator and its prompt cache, and :func:`.memory.empty_cache` hands MLX's buffer
cache to the allocator (figures in :attr:`ModelWorker.dropped`): every array of the model is
freed then — by reference counting, or, when the model object outlived the drop (a reference
cycle), by a garbage collection on the spot.  Giving the memory back to the system
(:func:`.memory.release`) is the owner's call: the backend does it once the next model is
ready, which reuses the freed memory meanwhile.  A failed load releases at once.  The thread's
last act is ``mx.clear_streams()``, without which the process may abort at exit.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ddx_llm.errors import ModelUnavailable
from ddx_llm.plugins.mlx_models import memory
from ddx_llm.plugins.mlx_models.progress import Sink, reporting_to

from .engine import BatchEngine
from .jobs import Failed, Job
from .prompt_cache import PromptCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker batches and caches (from ``[mlx]``)."""

    max_batch: int = 4
    prefill_step_size: int = 2048
    prefill_step_seconds: float = 1.0
    """The duration a step aims at; 0 = every chunk is ``prefill_step_size`` tokens."""
    prompt_cache_entries: int = 8
    prompt_cache_bytes: int = 1 << 30


GATHER_SECONDS = 0.25
"""Longest a step that starts new prompts waits for prompts announced meanwhile."""
GATHER_POLL = 0.005
ANNOUNCED_SECONDS = 5.0
"""An announcement that no job followed within this is forgotten (its request was dropped)."""


class Arrivals:
    """Prompts on their way to the worker: announced when the request side starts rendering
    one, forgotten once its job is queued (or the request is dropped).  Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[int, float] = {}
        self._count = 0

    def announce(self) -> int:
        """A ticket for one prompt being prepared."""
        with self._lock:
            self._count += 1
            self._due[self._count] = time.monotonic() + ANNOUNCED_SECONDS
            return self._count

    def forget(self, ticket: int) -> None:
        with self._lock:
            self._due.pop(ticket, None)

    def pending(self) -> bool:
        """Whether prompts announced lately are still on their way."""
        now = time.monotonic()
        with self._lock:
            for ticket in [t for t, due in self._due.items() if due < now]:
                del self._due[ticket]
            return bool(self._due)


class ModelWorker(threading.Thread):
    """The thread that owns one model.

    Args:
        loader: called on the worker thread; returns ``(model, tokenizer)`` from mlx-lm.
        name: the thread's name (shows in logs and thread dumps).
        options: batching and prompt-cache settings.
        progress: where the loader's progress goes (its ``current_sink`` on this thread:
            :mod:`ddx_llm.plugins.mlx_models.progress`), or None.

    ``loaded`` resolves to the tokenizer once the model is ready (or to the loader's exception).
    """

    def __init__(
        self,
        loader: Callable[[], tuple[Any, Any]],
        name: str,
        options: WorkerOptions | None = None,
        progress: Sink | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.loader = loader
        self.options = options or WorkerOptions()
        self.progress = progress
        self.loaded: Future[Any] = Future()
        self.last_step = time.monotonic()
        self.dropped: dict[str, float] | None = None
        """Memory figures once the model was dropped (before MLX's cache was emptied)."""
        self.crashed: str | None = None
        """Why the loop died, if it did (a bug: steps catch generation errors themselves)."""
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.arrivals = Arrivals()
        self._engine: BatchEngine | None = None
        self._model: weakref.ref[Any] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ other threads

    def submit(self, job: Job, ticket: int | None = None) -> Job:
        """Queue ``job``; ``ticket`` is its prompt's announcement (:class:`Arrivals`)."""
        if self._stopping or not self.is_alive():
            raise ModelUnavailable("the model is being unloaded", retry_after=1)
        job.worker = self
        self._jobs.put(job)
        if ticket is not None:
            self.arrivals.forget(ticket)  # after the put: the worker never waits in vain
        return job

    def stop(self) -> None:
        """Ask the thread to exit after its current step (does not wait)."""
        self._stopping = True
        self._jobs.put(None)

    @property
    def busy(self) -> bool:
        engine = self._engine
        return engine is not None and engine.active > 0

    def stalled_for(self) -> float:
        """Seconds since the last step while sequences wait for one; 0 when idle."""
        return time.monotonic() - self.last_step if self.busy else 0.0

    def status(self) -> dict[str, Any]:
        engine = self._engine
        busy = self.busy
        return {
            "busy": busy,
            "sequences": engine.active if engine else 0,
            "max_batch": self.options.max_batch,
            "tokens_generated": engine.tokens_generated if engine else 0,
            "requests_done": engine.requests_done if engine else 0,
            "prompt_tokens_processed": engine.prompt_tokens_processed if engine else 0,
            "seconds_since_step": round(self.stalled_for(), 3) if busy else None,
            "prompt_cache": engine.prompt_cache.status() if engine else {"enabled": False},
            "prefill": engine.pacer.status() if engine else None,
            "structured": engine.structured_status() if engine else None,
        }

    # ------------------------------------------------------------------ the worker thread

    def run(self) -> None:
        failed = False
        try:
            import mlx.core as mx

            mx.random.seed(_fresh_seed())  # unseeded sampling draws from this thread's state
            if self.progress is None:
                model, tokenizer = self.loader()
            else:
                with reporting_to(self.progress):
                    model, tokenizer = self.loader()
            self._engine = BatchEngine(
                model,
                tokenizer,
                stream=mx.new_stream(mx.default_device()),
                max_batch=self.options.max_batch,
                prefill_step_size=self.options.prefill_step_size,
                prefill_step_seconds=self.options.prefill_step_seconds,
                prompt_cache=PromptCache(
                    self.options.prompt_cache_entries, self.options.prompt_cache_bytes
                ),
            )
            self._model = weakref.ref(model)
            del model
        except BaseException as exc:
            failed = self._stopping = True
            if not isinstance(exc, ModelUnavailable):
                logger.warning("%s: loading failed", self.name, exc_info=True)
            # its frames may hold half-loaded weights: keep the error, not them
            self.loaded.set_exception(_detached(exc))
        if failed:
            self._finish(release=True)
            return
        self.loaded.set_result(tokenizer)
        try:
            self._serve(self._engine)
        except BaseException as exc:
            logger.exception("%s: the generation loop died", self.name)
            self.crashed = f"{type(exc).__name__}: {exc}"
        finally:
            self._stopping = True
            self._fail_queued()
            self._engine.close()
            self._finish()

    def _serve(self, engine: BatchEngine) -> None:
        while True:
            fresh = 0
            if engine.active == 0:
                job = self._jobs.get()  # idle: sleep until there is work
                if job is None:
                    return
                engine.admit(job)
                fresh = 1
                self.last_step = time.monotonic()  # the heartbeat starts now
            admitted = self._admit_queued(engine)
            if admitted is None or (fresh + admitted and not self._gather(engine)):
                return
            try:
                engine.step()
            except Exception as exc:
                logger.exception("%s: a generation step failed", self.name)
                engine.fail_all(exc)
            self.last_step = time.monotonic()

    def _admit_queued(self, engine: BatchEngine) -> int | None:
        """Admit every job that arrived meanwhile: how many, None when asked to stop."""
        admitted = 0
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return admitted
            if job is None:
                return None
            engine.admit(job)
            admitted += 1

    def _gather(self, engine: BatchEngine) -> bool:
        """Before a step that starts new prompts: wait, at most :data:`GATHER_SECONDS`, for the
        prompts announced meanwhile (:class:`Arrivals`: rendered on other threads right now),
        so that requests that come together are prefilled in the same steps — as mlx-lm's
        server, which renders them on this thread, does.  False when asked to stop."""
        deadline = time.monotonic() + GATHER_SECONDS
        while self.arrivals.pending():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            try:
                job = self._jobs.get(timeout=min(left, GATHER_POLL))
            except queue.Empty:
                continue
            if job is None:
                return False
            engine.admit(job)
        return True

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.post(Failed(ModelUnavailable("the model was unloaded", retry_after=1)))

    def _finish(self, release: bool = False) -> None:
        """Free the model's memory (its last references are gone) for the next model, or give
        it back to the system (``release``: after a failed load), and this thread's streams;
        record the memory figures on the way."""
        import mlx.core as mx

        self.dropped = memory.figures()
        if release:
            memory.release()
        else:
            outlived = self._model is not None and self._model() is not None
            memory.empty_cache(collect=outlived)
        mx.clear_streams()


def _detached(exc: BaseException) -> BaseException:
    """``exc`` and its chain without tracebacks (their frames would keep arrays alive)."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return exc


def _fresh_seed() -> int:
    return int.from_bytes(os.urandom(8), "little")
