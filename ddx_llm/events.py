"""Lifecycle facts the core emits through the ``ddx_llm_observe`` hook.

The core states what happened; plugins (metrics, logging, tracing) decide what to do with it.
Times are in seconds.  Every request that reaches generation ends with exactly one
:class:`RequestDone`, whatever happened (``finish_reason`` is then ``cancelled`` or ``error``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of every observation."""


@dataclass(frozen=True)
class RequestQueued(Event):
    """A chat request was accepted and waits for the model (admission, loading)."""

    model: str


@dataclass(frozen=True)
class RequestStarted(Event):
    """The request got the model and generation begins; ``queue_seconds`` it waited."""

    model: str
    queue_seconds: float
    queued_model: str | None = None
    """The model the request was counted as waiting for, when not ``model``: it named no model
    and a swap finished while it waited."""


@dataclass(frozen=True)
class RequestRejected(Event):
    """The request was turned away before generating (``code`` of the error)."""

    model: str
    code: str


@dataclass(frozen=True)
class FirstToken(Event):
    model: str
    seconds: float
    """Time from the start of the request to the first generated token."""


@dataclass(frozen=True)
class TokensGenerated(Event):
    model: str
    count: int
    seconds: float
    """Time since the previous generated piece (inter-token latency over ``count`` tokens)."""


@dataclass(frozen=True)
class RequestDone(Event):
    model: str
    finish_reason: str
    """``stop``, ``length``, ``tool_calls``, ``cancelled`` (client left) or ``error``."""
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    """End-to-end time from the start of the request."""


@dataclass(frozen=True)
class ModelLoading(Event):
    model: str
    previous: str | None


@dataclass(frozen=True)
class ModelLoaded(Event):
    model: str
    seconds: float
    swapped: bool


@dataclass(frozen=True)
class ModelFailed(Event):
    model: str
    error: str


@dataclass(frozen=True)
class ModelUnloaded(Event):
    model: str


class TokenClock:
    """Times one generation's tokens: :class:`FirstToken` for the first generated piece,
    :class:`TokensGenerated` for each later one; ``done`` gives its :class:`RequestDone`.

    Shared by every path that generates (the core's chat route, proxying backends), so the
    metrics mean the same thing whichever produced the tokens.
    """

    def __init__(self, hook: Any, model: str, started: float) -> None:
        self.hook = hook
        self.model = model
        self.started = started
        self.generated = 0
        self._last: float | None = None

    def tokens(self, count: int) -> None:
        """Record ``count`` newly generated tokens (a piece of output)."""
        now = time.monotonic()
        self.generated += count
        if self._last is None:
            emit(self.hook, FirstToken(model=self.model, seconds=now - self.started))
        else:
            emit(
                self.hook,
                TokensGenerated(model=self.model, count=count, seconds=now - self._last),
            )
        self._last = now

    def done(
        self, finish_reason: str, prompt_tokens: int, completion_tokens: int | None = None
    ) -> RequestDone:
        """The request's end; ``completion_tokens`` defaults to the tokens recorded."""
        return RequestDone(
            model=self.model,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=self.generated if completion_tokens is None else completion_tokens,
            seconds=time.monotonic() - self.started,
        )


def emit(hook: Any, event: Event) -> None:
    """Deliver ``event`` to every observer; an observer's exception is logged, never raised.

    Each implementation is called on its own so that one failing observer cannot keep the event
    from the others (a plain hook call stops at the first exception).
    """
    for impl in hook.ddx_llm_observe.get_hookimpls():
        try:
            impl.function(**{name: event for name in impl.argnames})
        except Exception:
            logger.exception(
                "observer %s raised on %s; ignored", impl.plugin_name, type(event).__name__
            )
