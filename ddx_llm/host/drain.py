"""Draining: the process is going away — finish what runs, refuse what is new, cut what is late.

States: serving → draining (:meth:`Drain.run` or :meth:`Drain.begin`) → cut (the drain timeout
ran out, or :meth:`Drain.cut` was called).

- Draining: new generations are refused (:meth:`Drain.refuse_new` raises 503
  ``model_unavailable`` with ``Retry-After``), ``/readyz`` answers 503 and ``/health`` says
  ``draining``.  Requests already admitted — queued, waiting for a model load, generating — go on.
- Cut: every wait or generation step running under :meth:`Drain.cuttable` is cancelled and raises
  :meth:`Drain.cut_error`, so a stream ends with an in-band error event and ``[DONE]``, a
  request that has not answered yet gets 503, and the model lease is released.

``ddx-llm serve`` runs :meth:`Drain.run` on SIGTERM before it lets Hypercorn close; the lifespan
shutdown (:meth:`ModelHost.close <ddx_llm.host.ModelHost.close>`) cuts whatever still runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import anyio

from ..errors import ModelUnavailable

logger = logging.getLogger(__name__)

SETTLE_SECONDS = 5.0
"""After a cut, how long :meth:`Drain.run` waits for the cut requests to send their last bytes
and release their slots."""


class Drain:
    """The shutdown state of one app (kept by its :class:`~ddx_llm.host.ModelHost`)."""

    def __init__(self) -> None:
        self.started: float | None = None
        """``time.monotonic()`` when draining began; None while serving."""
        self.deadline: float | None = None
        self._cut = False
        self._scopes: set[anyio.CancelScope] = set()

    @property
    def draining(self) -> bool:
        """True from the start of the drain on (cut included)."""
        return self.started is not None

    @property
    def is_cut(self) -> bool:
        return self._cut

    def seconds_left(self) -> float | None:
        """Time until the cut, None while serving."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def status(self) -> dict[str, object] | None:
        """The ``draining`` field of ``/health``: None while serving."""
        if not self.draining:
            return None
        left = self.seconds_left()
        return {"seconds_left": round(left, 1) if left is not None else None, "cut": self._cut}

    def begin(self, seconds: float) -> None:
        """Start draining: new generations are refused from now on, those admitted are cut in
        ``seconds`` (by :meth:`run`; ``begin`` alone only records the deadline)."""
        if self.started is None:
            self.started = time.monotonic()
            self.deadline = self.started + seconds

    def cut(self) -> None:
        """End the drain now: interrupt every wait and generation step in :meth:`cuttable`."""
        if self.started is None:
            self.begin(0)
        if not self._cut:
            self._cut = True
            self.deadline = min(self.deadline or time.monotonic(), time.monotonic())
        for scope in list(self._scopes):
            scope.cancel()

    async def run(self, seconds: float, wait_idle: Callable[[], Awaitable[None]]) -> bool:
        """Drain: refuse new generations, let the admitted ones finish for up to ``seconds``
        (``wait_idle`` returns when none is left), then cut the rest and give them up to
        :data:`SETTLE_SECONDS` to end.  Returns True when nothing had to be cut."""
        self.begin(seconds)
        logger.info("draining: new generations are refused; in-flight ones have %g s", seconds)
        with anyio.move_on_after(self.seconds_left() or 0):
            await wait_idle()
            logger.info("drained in %.1f s", time.monotonic() - (self.started or 0))
            return True
        logger.warning("drain timeout (%g s) reached: cutting the requests still running", seconds)
        self.cut()
        with anyio.move_on_after(SETTLE_SECONDS):
            await wait_idle()
        return False

    def retry_after(self) -> int:
        """``Retry-After`` of a refusal: this process is going away, so about the time the
        drain has left (at least 1 s, at most 60 s) — a balancer retries elsewhere at once."""
        return min(60, max(1, math.ceil(self.seconds_left() or 0) + 1))

    def refuse_new(self) -> None:
        """Raise the refusal of a new generation while draining; return while serving."""
        if self.draining:
            raise ModelUnavailable(
                "the server is shutting down",
                detail="draining: no new generations; retry on another instance",
                retry_after=self.retry_after(),
            )

    def cut_error(self) -> ModelUnavailable:
        """What a request that the drain cut gets (in-band, when its stream had begun)."""
        return ModelUnavailable(
            "the server is shutting down",
            detail="the drain timeout ran out before this request finished",
            retry_after=1,
        )

    @contextmanager
    def cuttable(self) -> Iterator[anyio.CancelScope]:
        """Run the block under a cancel scope that :meth:`cut` cancels; raise
        :meth:`cut_error` when it did (or when the drain was cut already).

        Only for blocks without a ``yield`` of an async generator inside: put it around one
        ``await`` (a queue wait, the next delta), never across a yield.
        """
        if self._cut:
            raise self.cut_error()
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)
        if scope.cancelled_caught:
            raise self.cut_error()
