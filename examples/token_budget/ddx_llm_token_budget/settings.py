"""The ``[token_budget]`` conf section, validated at start-up.

Every key can also be set by the variable ``DDX_LLM_TOKEN_BUDGET_<KEY>`` (lists comma-separated,
``per_client`` as JSON).  A bad value stops start-up (and ``ddx-llm check``, exit 2) with a
message naming the file, ``[token_budget] key`` and the variable.
"""

from __future__ import annotations

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from ddx_llm.config import CommaList, SectionSettings

SECTION = "token_budget"


class BudgetSettings(SectionSettings):
    """``[token_budget]``: how many tokens each client identity may spend per period."""

    tokens: NonNegativeInt = 100_000
    """Tokens (prompt + completion) each identity may spend per period; 0 refuses everything."""
    period_seconds: PositiveInt = 86_400
    """Length of a budget period.  Periods are aligned to the Unix epoch (UTC): a day starts at
    00:00 UTC, an hour on the hour."""
    per_client: dict[str, NonNegativeInt] = {}
    """Budgets of particular identities, overriding ``tokens``."""
    exempt: CommaList = []
    """Identities that are accounted but never refused."""
    anonymous: str = "anonymous"
    """The identity under which requests without one (auth off, or an unprotected route) are
    accounted and limited, all together; ``""``: such requests are neither accounted nor
    limited."""
    surfaces: CommaList = Field(default=["chat.completions"], min_length=1)
    """API surfaces whose requests are refused once the budget is spent (a route's
    ``surface``).  Tokens are accounted on every surface that generates."""

    @model_validator(mode="after")
    def _exempt_or_budgeted(self) -> BudgetSettings:
        both = sorted(set(self.exempt) & set(self.per_client))
        if both:
            raise ValueError(
                f"exempt and per_client both name {', '.join(both)}: an identity is either "
                "exempt or given a budget"
            )
        return self

    def limit(self, identity: str) -> int | None:
        """The budget of ``identity`` per period; None when it is exempt."""
        if identity in self.exempt:
            return None
        return self.per_client.get(identity, self.tokens)
