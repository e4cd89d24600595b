"""Reading and validating JSON request bodies into schema objects.

Every route that takes JSON — the core's and any plugin's — reads it through these helpers, so
each one refuses the same things the same way:

- a ``Content-Type`` that is not JSON (``application/json`` or ``application/<x>+json``, any
  parameters), or none: 415 ``unsupported_media_type``, before the body is read (a browser
  page cannot send JSON cross-site without a CORS preflight, so this keeps it out);
- an empty body, malformed JSON (``NaN`` and ``Infinity`` included: they are not JSON), or
  bytes that are not UTF-8: 422 ``request_invalid``;
- JSON nested deeper than :data:`MAX_DEPTH` arrays and objects: 422 (deep nesting would
  otherwise exhaust the recursion of the parser or of the code that walks the value);
- a string holding a lone UTF-16 surrogate (``"\\ud800"``): 422 naming the field — JSON allows
  the escape, but the value is not text and no backend can encode it.

What passes is plain JSON data, safe to validate with pydantic and to hand to any backend.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from ..errors import RequestInvalid, UnsupportedMediaType, validation_detail

M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 64
"""Deepest accepted nesting of arrays and objects in a request body (a chat request with tool
schemas rarely needs 10)."""
JSON_TYPE = re.compile(r"application/([a-z0-9!#$&^_.+-]+\+)?json", re.IGNORECASE)
SURROGATE = re.compile("[\ud800-\udfff]")


def require_json_type(request: Request) -> None:
    """Raise UnsupportedMediaType unless the request declares a JSON body."""
    declared = request.headers.get("content-type")
    media_type = (declared or "").split(";", 1)[0].strip()
    if not JSON_TYPE.fullmatch(media_type):
        shown = f"Content-Type {declared!r}" if declared else "no Content-Type"
        raise UnsupportedMediaType(
            f"this route takes JSON; the request has {shown}",
            detail="send Content-Type: application/json",
        )


def loads(raw: bytes) -> Any:
    """Parse ``raw`` as a request body: JSON, at most MAX_DEPTH deep, valid Unicode text in
    every string; otherwise raise RequestInvalid."""
    if not raw.strip():
        raise RequestInvalid("the request body is empty; a JSON object is expected")
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise RequestInvalid("malformed JSON in the request body", detail=str(exc)) from None
    except RecursionError:
        data = None
        depth_exceeded = True
    else:
        depth_exceeded = False
    if depth_exceeded or (_may_need_check(raw) and not _check(data)):
        raise RequestInvalid(
            "the request body is nested too deeply",
            detail=f"at most {MAX_DEPTH} levels of arrays and objects",
        )
    return data


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _may_need_check(raw: bytes) -> bool:
    """False when ``raw`` can hold neither nesting deeper than MAX_DEPTH (it has no more
    brackets than that, counted in C) nor a lone surrogate (in UTF-8 JSON one is only ever
    written as a ``\\u`` escape): most request bodies, which then skip :func:`_check`'s walk.
    Anything but UTF-8 bytes (JSON in UTF-16 or 32 has NUL bytes) is always checked."""
    if not isinstance(raw, bytes) or b"\x00" in raw or b"\\u" in raw:
        return True
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH


def _check(data: Any) -> bool:
    """False when ``data`` nests deeper than MAX_DEPTH; raises RequestInvalid for a string
    with a lone surrogate.  Iterative, so no depth can exhaust the stack."""
    pending: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            if SURROGATE.search(value):
                field = ".".join(path) or "(body)"
                raise RequestInvalid(
                    f"invalid text in {field}: a lone UTF-16 surrogate is not a character",
                    detail=[
                        {
                            "field": field,
                            "message": "String contains a lone surrogate (\\ud800-\\udfff)",
                            "type": "string_unicode",
                        }
                    ],
                )
            continue
        if isinstance(value, dict):
            children = [(v, (*path, k)) for k, v in value.items()]
            children += [(k, (*path, "(key)")) for k in value]
        elif isinstance(value, list):
            children = [(v, (*path, str(i))) for i, v in enumerate(value)]
        else:
            continue
        if len(path) >= MAX_DEPTH:
            return False
        pending.extend(children)
    return True


async def read_json(request: Request) -> Any:
    """The request body parsed by :func:`loads`, after :func:`require_json_type`."""
    require_json_type(request)
    return loads(await request.body())


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
