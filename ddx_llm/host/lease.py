"""The resident model with the count of requests using it, and the lease one request holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..registry import ModelEntry

CLIENT_CLOSED = "client_closed"
"""``RequestRejected.code`` of a request cancelled before it got its lease: its client left while
it waited for a slot or a model load (a hard stop reports the same)."""


@dataclass
class Resident:
    """The loaded model and the requests using it."""

    entry: ModelEntry
    handle: Any
    leases: int = 0
    _released: anyio.Event | None = field(default=None, repr=False)

    def add(self) -> None:
        """Count one more request using this model (never suspends)."""
        self.leases += 1

    def remove(self) -> None:
        """Count one request less; wakes :meth:`wait_released` when the count drops to 0."""
        self.leases -= 1
        if self.leases == 0 and self._released is not None:
            self._released.set()
            self._released = None

    async def wait_released(self) -> None:
        """Return once no request uses this model (at once when none does).  The event is
        made only for a waiter (a swap's drain), not per request."""
        while self.leases:
            if self._released is None:
                self._released = anyio.Event()
            await self._released.wait()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Count one request using this model for the block (:meth:`add`, :meth:`remove`)."""
        self.add()
        try:
            yield
        finally:
            self.remove()


class Lease:
    """What a request generates with: the registry entry it asked for and the backend handle.

    Held from :meth:`ModelHost.acquire <ddx_llm.host.ModelHost.acquire>` until :meth:`release`
    (the model cannot be swapped out meanwhile, and the request keeps its generation slot).
    """

    __slots__ = ("_release", "entry", "handle")

    def __init__(
        self, entry: ModelEntry, handle: Any, release: Callable[[], None] | None = None
    ) -> None:
        self.entry = entry
        self.handle = handle
        self._release = release

    def release(self) -> None:
        """Give the model and the slot back; synchronous, so it needs no shielding from
        cancellation.  Only the first call does anything."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def __repr__(self) -> str:
        return f"Lease(entry={self.entry.id!r}, held={self._release is not None})"
