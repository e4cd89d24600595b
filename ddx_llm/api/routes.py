"""The routes every deployment serves; plugins add theirs through ``ddx_llm_routes``.

Handlers are thin: they read the request, ask the :class:`~ddx_llm.host.ModelHost`, and answer
with a schema object.  Errors are raised; the core's error layer shapes them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..routing import Route
from .chat import chat_completions
from .health import health, readyz
from .models import current_model, list_models, load_model


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.context.openapi_document())


def core_routes() -> list[Route]:
    """Health, readiness, the registry and hot swap, chat completions, the OpenAPI document."""
    return [
        Route("/health", health, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/current", current_model, methods=["GET"]),
        Route("/v1/models/load", load_model, methods=["POST"], protected=True),
        Route(
            "/v1/chat/completions",
            chat_completions,
            methods=["POST"],
            protected=True,
            surface="chat.completions",
        ),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
