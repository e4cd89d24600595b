"""The budget policy: who is accounted under which identity, who is refused, what they see.

:class:`Budget` joins the validated settings and a :class:`~.ledger.Ledger`.  One exists per
app (``app.state("token_budget", ...)``), so several apps in one process never share counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ddx_llm.errors import LlmError

from .ledger import Ledger, Spent
from .settings import BudgetSettings


class BudgetExhausted(LlmError):
    """429 ``budget_exhausted``: the identity spent its tokens for this period.

    ``detail`` is ``{"client", "limit", "used", "retry_after"}``; the ``Retry-After`` header
    gives the whole seconds until the period resets.
    """

    status = 429
    code = "budget_exhausted"


def utc(seconds: float) -> str:
    """``seconds`` since the epoch as an ISO 8601 UTC timestamp (``2025-01-31T00:00:00Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Budget:
    """Accounting and enforcement of ``[token_budget]`` for one app."""

    def __init__(self, settings: BudgetSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.ledger = Ledger(settings.period_seconds, clock)

    def identity(self, client: str | None) -> str | None:
        """Whom a request of ``client`` is accounted to: the client itself, else the
        ``anonymous`` identity; None when unidentified requests are not accounted."""
        return client if client is not None else (self.settings.anonymous or None)

    def record(self, client: str | None, prompt_tokens: int, completion_tokens: int) -> None:
        """Account one finished request (from its ``RequestDone`` event)."""
        identity = self.identity(client)
        if identity is not None:
            self.ledger.spend(identity, prompt_tokens, completion_tokens)

    def check(self, client: str | None) -> None:
        """Raise :class:`BudgetExhausted` when ``client`` may not start another request.

        Requests already running when the budget runs out finish: the total of a period may
        exceed the budget by what they generate.
        """
        identity = self.identity(client)
        if identity is None:
            return
        limit = self.settings.limit(identity)
        if limit is None:
            return
        used = self.ledger.spent(identity).tokens
        if used >= limit:
            retry_after = self.ledger.seconds_left()
            raise BudgetExhausted(
                f"token budget of {limit} per {self.settings.period_seconds} s spent; "
                f"it resets in {retry_after} s",
                detail={
                    "client": identity,
                    "limit": limit,
                    "used": used,
                    "retry_after": retry_after,
                },
                headers={"Retry-After": str(retry_after)},
            )

    def report(self, client: str | None) -> dict[str, Any]:
        """The ``GET /v1/usage`` body for ``client`` (fields: see the package's README)."""
        identity = self.identity(client)
        start, end = self.ledger.period()
        spent = self.ledger.spent(identity) if identity is not None else Spent()
        limit = self.settings.limit(identity) if identity is not None else None
        return {
            "client": identity,
            "accounted": identity is not None,
            "exempt": identity is not None and limit is None,
            "limit": limit,
            "used": spent.tokens,
            "remaining": None if limit is None else max(0, limit - spent.tokens),
            "prompt_tokens": spent.prompt_tokens,
            "completion_tokens": spent.completion_tokens,
            "requests": spent.requests,
            "period_seconds": self.settings.period_seconds,
            "period_start": utc(start),
            "period_end": utc(end),
            "resets_in": self.ledger.seconds_left(),
        }
