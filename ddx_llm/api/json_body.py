"""Reading and validating JSON request bodies into schema objects."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from ..errors import RequestInvalid, validation_detail

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request) -> Any:
    """The request body parsed as JSON; malformed JSON raises RequestInvalid naming the position."""
    raw = await request.body()
    if not raw.strip():
        raise RequestInvalid("the request body is empty; a JSON object is expected")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestInvalid("malformed JSON in the request body", detail=str(exc)) from None


def parse_as(model: type[M], data: Any) -> M:
    """Validate ``data`` into ``model``; errors raise RequestInvalid listing every bad field."""
    if not isinstance(data, dict):
        raise RequestInvalid("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = validation_detail(exc)
        fields = ", ".join(item["field"] for item in detail)
        raise RequestInvalid(f"invalid request: {fields}", detail=detail) from None


async def read_model(request: Request, model: type[M]) -> M:
    """Read, parse and validate the body in one step."""
    return parse_as(model, await read_json(request))
