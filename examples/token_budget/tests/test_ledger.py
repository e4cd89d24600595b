"""The ledger and the policy on a clock the test moves: periods, resets, Retry-After."""

from __future__ import annotations

import pytest
from ddx_llm_token_budget import SECTION, Budget, BudgetExhausted, BudgetSettings
from ddx_llm_token_budget.ledger import Ledger

DAY = 86_400
MIDNIGHT = 1_735_689_600  # 2025-01-01T00:00:00Z


def settings(**values) -> BudgetSettings:
    """The section as start-up validates it (its variables read with the section's prefix)."""
    return BudgetSettings(_env_prefix=BudgetSettings.env_prefix_for(SECTION), **values)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_counts_add_up_per_identity_within_a_period():
    ledger = Ledger(DAY, Clock(MIDNIGHT + 10))
    ledger.spend("alice", 5, 3)
    ledger.spend("alice", 2, 1)
    ledger.spend("bob", 7, 0)
    alice = ledger.spent("alice")
    assert (alice.prompt_tokens, alice.completion_tokens, alice.tokens, alice.requests) == (
        7, 4, 11, 2
    )  # fmt: skip
    assert ledger.spent("bob").tokens == 7
    assert ledger.spent("carol").tokens == 0
    assert len(ledger) == 2


def test_a_new_period_starts_from_zero_at_the_epoch_aligned_boundary():
    clock = Clock(MIDNIGHT + DAY - 1)
    ledger = Ledger(DAY, clock)
    ledger.spend("alice", 10, 10)
    assert ledger.period() == (MIDNIGHT, MIDNIGHT + DAY)
    assert ledger.seconds_left() == 1
    clock.now = MIDNIGHT + DAY  # 00:00:00 UTC the next day
    assert ledger.spent("alice").tokens == 0
    assert ledger.period() == (MIDNIGHT + DAY, MIDNIGHT + 2 * DAY)
    assert ledger.seconds_left() == DAY


def test_a_clock_stepping_back_keeps_the_current_period():
    clock = Clock(MIDNIGHT + 5)
    ledger = Ledger(DAY, clock)
    ledger.spend("alice", 1, 1)
    clock.now = MIDNIGHT - 2  # NTP correction across midnight
    assert ledger.spent("alice").tokens == 2
    assert ledger.period() == (MIDNIGHT, MIDNIGHT + DAY)


def test_retry_after_rounds_up_to_whole_seconds():
    ledger = Ledger(3600, Clock(MIDNIGHT + 3600 - 0.25))
    assert ledger.seconds_left() == 1
    ledger.clock = Clock(MIDNIGHT + 0.5)
    assert ledger.seconds_left() == 3600


def test_the_policy_refuses_at_the_budget_and_names_the_reset():
    budget_settings = settings(tokens=10, per_client={"big": 100}, exempt=["ci"])
    budget = Budget(budget_settings, Clock(MIDNIGHT + DAY - 30))
    budget.record("alice", 6, 3)
    budget.check("alice")  # 9 of 10: one more request may start
    budget.record("alice", 1, 0)
    with pytest.raises(BudgetExhausted) as refused:
        budget.check("alice")
    error = refused.value
    assert (error.status, error.code) == (429, "budget_exhausted")
    assert error.headers == {"Retry-After": "30"}
    assert error.detail == {"client": "alice", "limit": 10, "used": 10, "retry_after": 30}
    budget.record("big", 50, 0)
    budget.check("big")  # its own, larger budget
    budget.record("ci", 1000, 0)
    budget.check("ci")  # exempt: accounted, never refused
    assert budget.report("ci")["used"] == 1000
    assert budget.report("ci")["remaining"] is None


def test_unidentified_requests_share_the_anonymous_identity_or_are_ignored():
    shared = Budget(settings(tokens=5), Clock(MIDNIGHT))
    shared.record(None, 3, 2)
    assert shared.report(None)["client"] == "anonymous"
    with pytest.raises(BudgetExhausted):
        shared.check(None)
    ignored = Budget(settings(tokens=5, anonymous=""), Clock(MIDNIGHT))
    ignored.record(None, 3, 2)
    ignored.check(None)
    report = ignored.report(None)
    assert (report["client"], report["accounted"], report["used"]) == (None, False, 0)
