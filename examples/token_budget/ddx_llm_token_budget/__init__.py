"""``ddx-llm-token-budget``: a token budget per client identity and period, for ddx-llm.

The plugin ``token_budget`` (entry point of group ``ddx_llm``) implements:

- ``ddx_llm_settings``: the ``[token_budget]`` section (:mod:`.settings`);
- ``ddx_llm_observe``: every ``RequestDone`` adds its prompt and completion tokens to the
  identity that made the request (``event.request.client``; unidentified requests go to the
  ``anonymous`` identity, or nowhere);
- ``ddx_llm_middleware``: :class:`~.gate.BudgetGate` (order 560) answers 429
  ``budget_exhausted`` with ``Retry-After`` to an identity whose budget is spent;
- ``ddx_llm_routes``: ``GET /v1/usage`` (protected: needs an API key when auth is on) reports
  the caller's usage and what remains;
- ``ddx_llm_openapi``: documents that route and the 429.

All state is the app's (``app.state("token_budget", ...)``): several apps in one process keep
separate counts.  Counts are in memory (see :mod:`.ledger`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ddx_llm import hookimpl
from ddx_llm.context import AppContext
from ddx_llm.events import Event, RequestDone, observes
from ddx_llm.middleware import MiddlewareSpec
from ddx_llm.routing import Route

from .gate import NAME, ORDER, BudgetGate
from .policy import Budget, BudgetExhausted
from .settings import SECTION, BudgetSettings

__all__ = ["SECTION", "Budget", "BudgetExhausted", "BudgetSettings", "budget"]

USAGE_PATH = "/v1/usage"


def budget(app: AppContext) -> Budget:
    """This app's :class:`Budget`, made from its settings on first use."""
    return app.state(SECTION, lambda: Budget(app.settings.section(SECTION)))


async def usage(request: Request) -> JSONResponse:
    """``GET /v1/usage``: the calling identity's usage this period and its remaining budget."""
    client = getattr(request.state, "client_id", None)
    return JSONResponse(budget(request.app.context).report(client))


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (SECTION, BudgetSettings)


@hookimpl
def ddx_llm_routes(app: AppContext) -> list[Route]:
    budget(app)  # made while the app is built, so a broken set-up fails at start-up
    return [Route(USAGE_PATH, usage, methods=["GET"], protected=True, surface="usage")]


@hookimpl
def ddx_llm_middleware(app: AppContext) -> MiddlewareSpec:
    surfaces = app.settings.section(SECTION).surfaces
    return MiddlewareSpec(NAME, ORDER, lambda inner: BudgetGate(inner, budget(app), surfaces))


@hookimpl
@observes(RequestDone)
def ddx_llm_observe(event: Event, app: AppContext) -> None:
    budget(app).record(event.request.client, event.prompt_tokens, event.completion_tokens)


@hookimpl
def ddx_llm_openapi(document: dict[str, Any], app: AppContext) -> None:
    surfaces = set(app.settings.section(SECTION).surfaces)
    paths = document.setdefault("paths", {})
    for route in app.routes:
        if getattr(route, "surface", None) not in surfaces:
            continue
        for method in getattr(route, "methods", None) or ():
            operation = paths.get(route.path, {}).get(method.lower())
            if operation is not None:
                operation.setdefault("responses", {})["429"] = EXHAUSTED_RESPONSE
    paths[USAGE_PATH] = {"get": USAGE_OPERATION}


EXHAUSTED_RESPONSE = {
    "description": "The caller's token budget for this period is spent (`budget_exhausted`); "
    "`Retry-After` gives the seconds until it resets.",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}

USAGE_OPERATION = {
    "summary": "Token usage of the calling identity",
    "description": "Tokens (prompt + completion) the caller spent in the current budget "
    "period, its budget, and when the period resets.",
    "operationId": "getUsage",
    "tags": ["token_budget"],
    "responses": {
        "200": {
            "description": "Usage this period.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["client", "accounted", "limit", "used", "remaining"],
                        "properties": {
                            "client": {"type": ["string", "null"]},
                            "accounted": {"type": "boolean"},
                            "exempt": {"type": "boolean"},
                            "limit": {"type": ["integer", "null"]},
                            "used": {"type": "integer"},
                            "remaining": {"type": ["integer", "null"]},
                            "prompt_tokens": {"type": "integer"},
                            "completion_tokens": {"type": "integer"},
                            "requests": {"type": "integer"},
                            "period_seconds": {"type": "integer"},
                            "period_start": {"type": "string", "format": "date-time"},
                            "period_end": {"type": "string", "format": "date-time"},
                            "resets_in": {"type": "integer"},
                        },
                    }
                }
            },
        }
    },
}
