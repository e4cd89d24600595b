"""The model registry (``/v1/models``), the resident model (``/v1/models/current``) and hot
swap (``POST /v1/models/load``)."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ModelNotFound
from ..host import NOT_REAL_MODE
from ..registry import Registry
from ..schemas import LoadRequest
from .json_body import read_model


async def list_models(request: Request) -> Response:
    registry = request.app.context.settings.registry
    body = _LISTINGS.get(registry)
    if body is None:  # the registry never changes once loaded: its listing is made once
        listing = {"object": "list", "data": [entry.public() for entry in registry]}
        body = _LISTINGS[registry] = JSONResponse(listing).body
    return Response(body, media_type="application/json")


_LISTINGS: WeakKeyDictionary[Registry, bytes] = WeakKeyDictionary()


async def current_model(request: Request) -> JSONResponse:
    return JSONResponse(request.app.context.host.current())


async def load_model(request: Request) -> JSONResponse:
    app = request.app.context
    if not app.backend.real_model_mode:
        raise ModelNotFound("model loading is not available", detail=NOT_REAL_MODE)
    body = await read_model(request, LoadRequest)
    return JSONResponse(await app.host.load(body.model_id))
