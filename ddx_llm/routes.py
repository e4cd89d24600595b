"""The core routes: health, readiness, the model registry and hot swap, chat, OpenAPI.

Handlers are thin: they read the request, ask the :class:`~ddx_llm.host.ModelHost`, and answer
with a schema object.  Errors are raised (the ``errors`` plugin shapes them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .body import read_model
from .chat import chat_completions
from .errors import ModelNotFound
from .host import NOT_REAL_MODE
from .resident import ModelState
from .schemas import LoadRequest

if TYPE_CHECKING:
    from .app import AppContext

HEALTH_STATUS = {ModelState.READY: "ok", ModelState.LOADING: "loading"}
"""Model state → ``/health`` status; anything else (idle, failed) is ``degraded``."""


def _context(request: Request) -> AppContext:
    return request.app.context


def health_body(ctx: AppContext) -> dict[str, Any]:
    """The ``/health`` document: core fields, readiness reasons, then plugin extras."""
    host = ctx.host
    reasons = ctx.not_ready_reasons()
    status = HEALTH_STATUS.get(host.state, "degraded")
    if reasons and status == "ok":
        status = "degraded"
    body: dict[str, Any] = {
        "status": status,
        "model": host.model_id,
        "model_state": host.state.value,
        "model_load_elapsed_ms": host.load_elapsed_ms(),
        "backend": ctx.backend.name,
        "requests": {"running": host.admission.running, "waiting": host.admission.waiting},
    }
    if host.error:
        body["model_error"] = host.error
    if reasons:
        body["reasons"] = reasons
    for extra in ctx.hook.ddx_llm_health(host=host):
        for key, value in (extra or {}).items():
            body.setdefault(key, value)
    return body


async def health(request: Request) -> JSONResponse:
    return JSONResponse(health_body(_context(request)))


async def readyz(request: Request) -> JSONResponse:
    ctx = _context(request)
    reasons = ctx.not_ready_reasons()
    if ctx.host.state is not ModelState.READY:
        reasons.insert(0, f"model state is {ctx.host.state.value}")
    return JSONResponse(
        {"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200
    )


async def list_models(request: Request) -> JSONResponse:
    registry = _context(request).settings.registry
    return JSONResponse({"object": "list", "data": [entry.public() for entry in registry]})


async def current_model(request: Request) -> JSONResponse:
    return JSONResponse(_context(request).host.current())


async def load_model(request: Request) -> JSONResponse:
    ctx = _context(request)
    if not ctx.backend.real_model_mode:
        raise ModelNotFound("model loading is not available", detail=NOT_REAL_MODE)
    body = await read_model(request, LoadRequest)
    return JSONResponse(await ctx.host.load(body.model_id))


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(_context(request).openapi_document())


def core_routes() -> list[Route]:
    """The routes every deployment serves (plugins add theirs through ``ddx_llm_routes``)."""
    return [
        Route("/health", health, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/current", current_model, methods=["GET"]),
        Route("/v1/models/load", load_model, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
