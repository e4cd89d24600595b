"""The middleware that refuses requests of an identity whose budget is spent.

Order 560, between ``rate_limit`` (550) and the core's body-size limit:

- inside ``auth`` (500): it needs the identity auth puts in ``scope["state"]["client_id"]``,
  and requests auth refuses never reach it;
- inside the core's error layer (400): it raises :class:`~.policy.BudgetExhausted`, which that
  layer turns into the documented 429 body with CORS and request-id headers;
- inside ``rate_limit`` (550): a request over its rate is refused before its budget is looked
  at, so a client hammering the service learns about the rate first.

It decides by the route the app matched (``matched_route(scope).surface``), never by path, and
lets everything else (``lifespan``, other routes, CORS preflights) through unchanged.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from ddx_llm.events import CLIENT_ID
from ddx_llm.routing import matched_route

from .policy import Budget

NAME = "token_budget"
ORDER = 560


class BudgetGate:
    """Pure ASGI: before a request of a budgeted surface runs, :meth:`Budget.check` its
    identity (raising 429 when spent)."""

    def __init__(self, app: ASGIApp, budget: Budget, surfaces: Collection[str]) -> None:
        self.app = app
        self.budget = budget
        self.surfaces = frozenset(surfaces)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and matched_route(scope).surface in self.surfaces
        ):
            self.budget.check(scope.get("state", {}).get(CLIENT_ID))
        await self.app(scope, receive, send)
