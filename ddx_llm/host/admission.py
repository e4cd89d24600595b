"""Admission control: at most ``max_running`` requests generate, at most ``max_waiting`` queue.

Past the queue's size, or after ``max_queue_seconds`` in it, a request gets an immediate 503
``overloaded`` with ``Retry-After`` instead of piling up without bound.  Waiters are served in
arrival order (anyio's semaphore is FIFO).  A waiter that is cancelled — its client left, or
the drain cut it — gives its place back at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ..errors import Overloaded


class Admission:
    """Slots for generating requests and a bounded, time-limited queue for the rest."""

    def __init__(self, max_running: int, max_waiting: int, max_queue_seconds: float) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.max_queue_seconds = max_queue_seconds
        self.running = 0
        self.waiting = 0
        self._slots = anyio.Semaphore(max_running)
        self._mean_hold = 1.0  # seconds a request holds its slot, smoothed
        self._idle: anyio.Event | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one generation slot; raises :class:`Overloaded` when the queue is full or the
        wait exceeds ``max_queue_seconds``."""
        if self._slots.value == 0 and self.waiting >= self.max_waiting:
            raise Overloaded(
                "the server is at capacity",
                detail=f"{self.running} requests running and {self.waiting} waiting",
                retry_after=self.retry_after(),
            )
        acquired = False
        self.waiting += 1
        try:
            with anyio.move_on_after(self.max_queue_seconds):
                await self._slots.acquire()
                acquired = True
        finally:
            self.waiting -= 1
            self._check_idle()
        if not acquired:
            raise Overloaded(
                "the server is at capacity",
                detail=f"no generation slot freed within {self.max_queue_seconds:g} s",
                retry_after=self.retry_after(),
            )
        self.running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            self._mean_hold += 0.2 * (time.monotonic() - started - self._mean_hold)
            self._check_idle()

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
