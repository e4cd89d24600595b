"""The MLX worker: one thread that loads one model and runs every generation on it.

MLX streams, lazy arrays and the random generator belong to the thread that made them (mlx
0.32), so a single long-lived thread does all MLX work: it loads the model, seeds, builds the
sampler, runs ``mlx_lm.stream_generate`` on a stream it created, and converts results to plain
Python values before handing them over.  It lives as long as the model is resident; stopping it
drops the model, clears MLX's buffer cache and its streams (``mx.clear_streams()``, without which
the process may abort at exit).

Hand-over never blocks the worker: each :class:`Job` has a thread-safe queue of events
(:class:`Piece`, then one :class:`Finished` or :class:`Failed`), which the request drains from
the event loop side with ``anyio.to_thread.run_sync(job.wait)``.  A slow or vanished client can
therefore never stall the generation of others (or of itself).  Cancelling is a flag
(``job.cancel``), checked after every token and during prompt processing: a closed request
stops its generation within one token.  The worker always ends a job with ``Finished`` —
reason ``cancelled`` if the flag stopped it.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ddx_llm.errors import LlmError, ModelUnavailable
from ddx_llm.schemas import TokenLogprob

from .logprobs import TokenTexts, token_logprob
from .sampling import SamplingParams, build_processors, build_sampler
from .stops import StopMatcher

logger = logging.getLogger(__name__)


@dataclass
class Piece:
    """Text released by one generated token (may be empty while a stop string could still
    match), and that token's log probability when asked for."""

    text: str
    tokens: int = 1
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Finished:
    """The generation ended: ``reason`` is ``stop`` (end of turn or a stop string), ``length``
    or ``cancelled``.  ``completion_tokens`` counts every generated token, the end-of-turn
    token included."""

    reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    error: BaseException


Event = Piece | Finished | Failed


class _Cancelled(Exception):
    """Raised from the prompt-progress callback to abandon prompt processing."""


class Job:
    """One generation request: prompt token ids, sampling parameters, a cancel flag and the
    queue of events the worker posts for it."""

    def __init__(self, tokens: list[int], params: SamplingParams) -> None:
        self.tokens = tokens
        self.params = params
        self.cancel = threading.Event()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._worker: ModelWorker | None = None

    def post(self, event: Event) -> None:
        self._events.put(event)

    def wait(self, poll: float = 0.25) -> list[Event]:
        """Block until at least one event is there; return all that are (blocking: call it in
        a thread).  A worker that died without finishing the job yields a :class:`Failed`."""
        while True:
            try:
                events = [self._events.get(timeout=poll)]
                break
            except queue.Empty:
                if self._worker is not None and not self._worker.is_alive():
                    return [Failed(LlmError("the generation worker stopped unexpectedly"))]
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events


class ModelWorker(threading.Thread):
    """The thread that owns one model.

    Args:
        loader: called on the worker thread; returns ``(model, tokenizer)`` from mlx-lm.
        name: the thread's name (shows in logs and thread dumps).
        prefill_step_size: prompt tokens per processing step (the cancel-check interval while
            the prompt is processed).

    ``loaded`` resolves to the tokenizer once the model is ready (or to the loader's exception).
    """

    def __init__(
        self, loader: Callable[[], tuple[Any, Any]], name: str, *, prefill_step_size: int = 2048
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.loader = loader
        self.prefill_step_size = prefill_step_size
        self.loaded: Future[Any] = Future()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._stopping = False
        self.busy = False
        self.tokens_generated = 0
        self.requests_done = 0
        self.last_step = time.monotonic()

    # ------------------------------------------------------------------ other threads

    def submit(self, job: Job) -> Job:
        if self._stopping or not self.is_alive():
            raise ModelUnavailable("the model is being unloaded", retry_after=1)
        job._worker = self
        self._jobs.put(job)
        return job

    def stop(self) -> None:
        """Ask the thread to finish its current job queue and exit (does not wait)."""
        self._stopping = True
        self._jobs.put(None)

    def status(self) -> dict[str, Any]:
        return {
            "busy": self.busy,
            "tokens_generated": self.tokens_generated,
            "requests_done": self.requests_done,
            "seconds_since_step": round(time.monotonic() - self.last_step, 3),
        }

    # ------------------------------------------------------------------ the worker thread

    def run(self) -> None:
        try:
            import mlx.core as mx

            mx.random.seed(_fresh_seed())
            model, tokenizer = self.loader()
            stream = mx.new_stream(mx.default_device())
            texts = TokenTexts(tokenizer)
        except BaseException as exc:
            self._stopping = True
            self.loaded.set_exception(exc)
            _release_mlx()
            return
        self.loaded.set_result(tokenizer)
        try:
            while (job := self._jobs.get()) is not None:
                self._serve(job, model, tokenizer, texts, stream)
            del model, tokenizer, texts, stream
        finally:
            self._stopping = True
            self._fail_queued()
            _release_mlx()

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.post(Failed(ModelUnavailable("the model was unloaded", retry_after=1)))

    def _serve(self, job: Job, model: Any, tokenizer: Any, texts: TokenTexts, stream: Any) -> None:
        self.busy = True
        self.last_step = time.monotonic()
        final: Event
        try:
            final = self._generate(job, model, tokenizer, texts, stream)
        except Exception as exc:
            logger.exception("generation failed")
            final = Failed(exc)
        # counters first: whoever sees the final event sees them up to date
        self.busy = False
        self.requests_done += 1
        job.post(final)

    def _generate(
        self, job: Job, model: Any, tokenizer: Any, texts: TokenTexts, stream: Any
    ) -> Finished:
        import mlx.core as mx
        from mlx_lm import stream_generate

        params = job.params
        if params.seed is not None:
            mx.random.seed(params.seed)

        def check_cancel(_done: int, _total: int) -> None:
            # called before the prompt is processed, after each step of it, and after the
            # first token: a job cancelled while it waited in the queue costs nothing
            self.last_step = time.monotonic()
            if job.cancel.is_set():
                raise _Cancelled

        matcher = StopMatcher(params.stops)
        generated, reason = 0, "cancelled"
        steps = stream_generate(
            model,
            tokenizer,
            job.tokens,
            max_tokens=params.max_tokens,
            stream=stream,
            sampler=build_sampler(params),
            logits_processors=build_processors(params),
            prefill_step_size=self.prefill_step_size,
            prompt_progress_callback=check_cancel,
        )
        try:
            for step in steps:
                generated = step.generation_tokens
                self.tokens_generated += 1
                self.last_step = time.monotonic()
                end_of_turn = step.finish_reason == "stop"  # the end token: no text, no logprob
                logprobs = None
                if params.logprobs and not end_of_turn:
                    top = params.top_logprobs
                    logprobs = [token_logprob(step.logprobs, step.token, top, texts)]
                text, stopped = matcher.feed(step.text)
                if stopped:
                    job.post(Piece(text, 1, logprobs))
                    reason = "stop"
                    break
                if step.finish_reason:
                    text += matcher.flush()
                    reason = step.finish_reason
                job.post(Piece(text, 1, logprobs))
                if step.finish_reason or job.cancel.is_set():
                    break
        except _Cancelled:
            pass
        finally:
            steps.close()  # on this thread: a generator's stream context must die where it was made
            if params.seed is not None:
                mx.random.seed(_fresh_seed())  # later unseeded requests must not replay it
        return Finished(reason, len(job.tokens), generated)


def _release_mlx() -> None:
    """Return freed buffers to the system and drop this thread's streams (an exiting thread
    that keeps them can make the process abort at exit)."""
    try:
        import mlx.core as mx
    except ImportError:
        return
    gc.collect()
    mx.clear_cache()
    mx.clear_streams()


def _fresh_seed() -> int:
    return int.from_bytes(os.urandom(8), "little")
