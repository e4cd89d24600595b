"""Admission control: at most ``max_running`` requests generate, at most ``max_waiting`` queue.

Past the queue's size, or after ``max_queue_seconds`` in it, a request gets an immediate 503
``overloaded`` with ``Retry-After`` instead of piling up without bound.  Waiters are served in
arrival order.  A waiter that is cancelled — its client left, or the drain cut it — gives its
place back at once.

A free slot is taken without suspending (:meth:`Admission.try_acquire`): no checkpoint, no
cancel scope, no timer — the common case of a server that is not at capacity costs a few
attribute updates.  Only a request that has to queue waits on an event of its own, bounded by
``max_queue_seconds``; a released slot is handed to the first waiter directly, so a newcomer
can never overtake the queue.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ..errors import Overloaded


class Admission:
    """Slots for generating requests and a bounded, time-limited FIFO queue for the rest."""

    def __init__(self, max_running: int, max_waiting: int, max_queue_seconds: float) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.max_queue_seconds = max_queue_seconds
        self.running = 0
        self.waiting = 0
        self._free = max_running
        self._waiters: deque[anyio.Event] = deque()
        self._mean_hold = 1.0  # seconds a request holds its slot, smoothed
        self._idle: anyio.Event | None = None

    def try_acquire(self) -> float | None:
        """Take a slot at once if one is free and nobody queues, without suspending; returns
        the token :meth:`release` takes, or None when the request would have to queue."""
        if self._free and not self._waiters:
            self._free -= 1
            self.running += 1
            return time.monotonic()
        return None

    async def acquire(self) -> float:
        """Take a slot, queueing (FIFO, bounded) when none is free; returns the token
        :meth:`release` takes.  Raises :class:`Overloaded` when the queue is full or the wait
        exceeds ``max_queue_seconds``.  Cancelled while queued, the place is given back."""
        token = self.try_acquire()
        if token is not None:
            return token
        if self.waiting >= self.max_waiting:
            raise Overloaded(
                "the server is at capacity",
                detail=f"{self.running} requests running and {self.waiting} waiting",
                retry_after=self.retry_after(),
            )
        turn = anyio.Event()
        self._waiters.append(turn)
        self.waiting += 1
        try:
            with anyio.move_on_after(self.max_queue_seconds):
                await turn.wait()
        except BaseException:  # cancelled: the client left, or the drain cut the wait
            self.waiting -= 1
            if turn.is_set():
                self._hand_over()  # handed a slot while leaving: it goes to the next waiter
            else:
                self._waiters.remove(turn)
            self._check_idle()
            raise
        self.waiting -= 1
        if not turn.is_set():
            self._waiters.remove(turn)
            self._check_idle()
            raise Overloaded(
                "the server is at capacity",
                detail=f"no generation slot freed within {self.max_queue_seconds:g} s",
                retry_after=self.retry_after(),
            )
        self.running += 1  # the releaser handed its slot over: _free was not increased
        return time.monotonic()

    def release(self, token: float) -> None:
        """Give back the slot taken with ``token``; never suspends."""
        self.running -= 1
        self._mean_hold += 0.2 * (time.monotonic() - token - self._mean_hold)
        self._hand_over()
        self._check_idle()

    def _hand_over(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # straight to the first waiter: no overtaking
        else:
            self._free += 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one generation slot (:meth:`acquire`, then :meth:`release`)."""
        token = await self.acquire()
        try:
            yield
        finally:
            self.release(token)

    async def wait_idle(self) -> None:
        """Return once no request runs or waits (at once when none does)."""
        while self.running or self.waiting:
            if self._idle is None or self._idle.is_set():
                self._idle = anyio.Event()
            await self._idle.wait()

    def _check_idle(self) -> None:
        if self._idle is not None and not (self.running or self.waiting):
            self._idle.set()

    def retry_after(self) -> int:
        """A hint for clients: about how long the current queue takes to drain at the recent
        pace, between 1 and 60 seconds."""
        turns = (self.waiting + 1) / self.max_running
        return min(60, max(1, math.ceil(turns * self._mean_hold)))
