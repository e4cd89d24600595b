"""What a request hands to the MLX worker, and the events the worker posts back.

A :class:`Job` carries plain values in (prompt token ids, :class:`~.sampling.SamplingParams`, and
for structured output the compiled grammar the worker copies into the sequence) and plain values
out: the worker posts :class:`Piece` events, then exactly one :class:`Finished` or
:class:`Failed`, on the job's thread-safe queue.  The request side drains it from a thread
(``anyio.to_thread.run_sync(job.wait)``), so a slow or vanished client never stalls the worker.
Cancelling is the flag ``job.cancel``: the worker checks it before every scheduler step and
drops only that sequence.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ddx_llm.errors import LlmError
from ddx_llm.schemas import TokenLogprob

from .sampling import SamplingParams

if TYPE_CHECKING:
    from .structured import CompiledGrammar


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
    token included; ``cached_tokens`` is the part of the prompt served from the prompt cache."""

    reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass
class Failed:
    error: BaseException


Event = Piece | Finished | Failed


class Job:
    """One generation request: prompt token ids, sampling parameters, the grammar that
    constrains it (or None), a cancel flag and the queue of events the worker posts for it."""

    def __init__(
        self, tokens: list[int], params: SamplingParams, grammar: CompiledGrammar | None = None
    ) -> None:
        self.tokens = tokens
        self.params = params
        self.grammar = grammar
        self.cancel = threading.Event()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.worker: threading.Thread | None = None
        """The worker thread serving the job (set by ``submit``): a dead one fails ``wait``."""

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
                if self.worker is not None and not self.worker.is_alive():
                    return [Failed(LlmError("the generation worker stopped unexpectedly"))]
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events
