"""The resident model with the count of requests using it, and the lease one request holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
    released: anyio.Event = field(default_factory=anyio.Event)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Count one request using this model; ``released`` is set when the count drops to 0."""
        if self.leases == 0:
            self.released = anyio.Event()
        self.leases += 1
        try:
            yield
        finally:
            self.leases -= 1
            if self.leases == 0:
                self.released.set()


@dataclass(frozen=True)
class Lease:
    """What a request generates with: the registry entry it asked for and the backend handle."""

    entry: ModelEntry
    handle: Any
