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
from collections.abc import Awaitable, Callable
from typing import Any

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
        self._watches: set[CutWatch] = set()

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
        for watch in list(self._watches):
            watch.interrupt()

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

    def watch(self) -> CutWatch:
        """A :class:`CutWatch` for one generation whose consumer enters it around its whole
        loop: the cut without a cancel scope per piece."""
        return CutWatch(self)

    def cuttable(self) -> Cuttable:
        """A context manager running its block under a cancel scope that :meth:`cut` cancels;
        it raises :meth:`cut_error` when it did (or when the drain was cut already).

        Only for blocks without a ``yield`` of an async generator inside: put it around one
        ``await`` (a queue wait, the next delta), never across a yield.
        """
        return Cuttable(self)


class Cuttable:
    """One block :meth:`Drain.cut` may interrupt (see :meth:`Drain.cuttable`).  A class rather
    than a generator-based context manager: it runs once per generated piece."""

    __slots__ = ("_drain", "_scope")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._scope: anyio.CancelScope | None = None

    def __enter__(self) -> anyio.CancelScope:
        drain = self._drain
        if drain._cut:
            raise drain.cut_error()
        scope = self._scope = anyio.CancelScope()
        drain._scopes.add(scope)
        scope.__enter__()
        return scope

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        scope = self._scope
        assert scope is not None
        self._drain._scopes.discard(scope)
        swallowed = scope.__exit__(exc_type, exc, tb)
        if scope.cancelled_caught:
            raise self._drain.cut_error() from None
        return bool(swallowed)


class CutWatch:
    """The drain's cut for one generation, with one cancel scope for all its pieces.

    :meth:`Drain.cuttable` around each wait for a piece costs a cancel scope per token.  A
    consumer that owns the whole loop — the core's SSE and JSON answers — enters a ``CutWatch``
    once around it instead, and the generation (:func:`ddx_llm.api.chat.observe`) marks its
    waits with :attr:`waiting`.  A cut then cancels the scope only while the generation waits
    for a piece, as :meth:`Drain.cuttable` would; a cut that comes while the consumer sends
    is noted, and the next wait (:meth:`check`) raises :meth:`Drain.cut_error` instead of
    starting — a send is never interrupted.  Leaving the block after the cancel raises
    :meth:`Drain.cut_error` too.  The generation must hold no cancel scope across its yields
    (none does: :meth:`Drain.cuttable`'s own rule).
    """

    __slots__ = ("_drain", "_scope", "cut", "waiting")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._scope: anyio.CancelScope | None = None
        self.waiting = False
        """The generation waits for its next piece (set around that ``await`` only)."""
        self.cut = False
        """The drain cut this generation."""

    def __enter__(self) -> CutWatch:
        drain = self._drain
        if drain._cut:
            raise drain.cut_error()
        scope = self._scope = anyio.CancelScope()
        drain._watches.add(self)
        scope.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        scope = self._scope
        assert scope is not None
        self._drain._watches.discard(self)
        swallowed = scope.__exit__(exc_type, exc, tb)
        if scope.cancelled_caught:
            raise self._drain.cut_error() from None
        return bool(swallowed)

    def interrupt(self) -> None:
        """The drain's cut: cancel the wait in progress, or the next one."""
        self.cut = True
        if self.waiting and self._scope is not None:
            self._scope.cancel()

    def check(self) -> None:
        """Before a wait: raise :meth:`Drain.cut_error` when the generation was cut."""
        if self.cut or self._drain._cut:
            self.cut = True
            raise self._drain.cut_error()
