"""Token counts per identity for the current budget period, in memory.

Periods are fixed windows aligned to the Unix epoch: with a period of 86400 s every day starts at
00:00 UTC, with 3600 s every hour on the hour.  When a period ends, every count starts again from
zero.  A request is accounted in the period in which it finished.

The ledger lives in one process and is lost on restart: with several Hypercorn workers or
replicas each counts alone.  A production version keeps the counts in a shared store instead
(Redis: ``INCRBY budget:<period start>:<identity>`` with ``EXPIREAT`` at the period's end, from
a worker thread or an async client), behind the same three methods.

No I/O, no locks: every method runs on the event loop and returns at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Spent:
    """What one identity spent in the current period."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Ledger:
    """Per-identity :class:`Spent` of the current period.

    Args:
        period_seconds: the period's length.
        clock: seconds since the epoch (``time.time``); tests pass their own.
    """

    def __init__(self, period_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.period_seconds = period_seconds
        self.clock = clock
        self._start = -1
        self._spent: dict[str, Spent] = {}

    def _current(self) -> float:
        """Start the counts afresh when a new period began; return the time now.  A clock
        stepping back (NTP) keeps the current period rather than reopening an old one."""
        now = self.clock()
        start = math.floor(now / self.period_seconds) * self.period_seconds
        if start > self._start:
            self._start = start
            self._spent = {}
        return now

    def spend(self, identity: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Account one finished request of ``identity``."""
        self._current()
        spent = self._spent.setdefault(identity, Spent())
        spent.prompt_tokens += prompt_tokens
        spent.completion_tokens += completion_tokens
        spent.requests += 1

    def spent(self, identity: str) -> Spent:
        """What ``identity`` spent this period (a copy; zeros when nothing)."""
        self._current()
        found = self._spent.get(identity, Spent())
        return Spent(found.prompt_tokens, found.completion_tokens, found.requests)

    def seconds_left(self) -> int:
        """Whole seconds until the period ends (at least 1): a ``Retry-After`` value."""
        now = self._current()
        return max(1, math.ceil(self._start + self.period_seconds - now))

    def period(self) -> tuple[int, int]:
        """The current period: its start and its end, in seconds since the epoch."""
        self._current()
        return self._start, self._start + self.period_seconds

    def __len__(self) -> int:
        """Identities that spent something this period."""
        self._current()
        return len(self._spent)
