"""The OpenAPI 3.2 document, generated from the same pydantic schemas that validate requests.

The document describes exactly what the service accepts: the request schemas carry every rule
their validators enforce (strict types, bounds, ``n`` = 1, up to 4 non-empty ``stop`` strings,
``content`` on every message but an assistant's tool calls), and each operation lists every
status it can answer.  What no JSON Schema can say is in the operation's description: the
context window (422 ``context_too_long``) and the values a backend cannot honour.  A chat stream
is described event by event with OpenAPI 3.2's ``itemSchema``: each event's ``data`` is a
:class:`~ddx_llm.schemas.ChatCompletionChunk` or a :class:`~ddx_llm.schemas.StreamError` as JSON
(``contentMediaType`` / ``contentSchema``), or ``[DONE]``.

Plugins amend it through ``ddx_llm_openapi`` (the auth plugin adds its security schemes, the
metrics plugin its route).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import __version__
from .schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CurrentModel,
    ErrorBody,
    Health,
    LoadRequest,
    LoadResult,
    ModelList,
    Readiness,
    StreamError,
)

REF = "#/components/schemas/{model}"

ERRORS = {
    "400": "Ambiguous framing: Content-Length with Transfer-Encoding (`bad_request`); "
    "the connection is closed",
    "404": "Unknown model or route (`model_not_found`, `not_found`)",
    "408": "The request body did not arrive within `[core] body_timeout_seconds` "
    "(`request_timeout`)",
    "413": "Request body over the size limit (`request_too_large`)",
    "415": "The body is not declared JSON: Content-Type must be `application/json` or "
    "`application/*+json` (`unsupported_media_type`)",
    "422": "Invalid request or context too long (`request_invalid`, `context_too_long`)",
    "500": "Unexpected failure (`llm_error`)",
    "503": "Model loading, failed or at capacity (`model_unavailable`, `overloaded`)",
}
BODY_ERRORS = ("400", "404", "408", "413", "415", "422", "500", "503")
CHAT_NOTES = (
    "Beyond the schema: the prompt's tokens plus `max_tokens` must fit the model's context "
    "window (else 422 `context_too_long`), and a backend refuses with 422 `request_invalid` "
    "the values it cannot honour (README: `mlx` and `omni` list theirs; `mock` refuses "
    "none).  Unknown fields are ignored.  With `stream: true` the answer is a server-sent "
    "event stream: chunks, an in-band error event if generation fails after the headers, "
    "then `[DONE]`."
)


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }


def _operation(
    summary: str,
    response: type[BaseModel],
    *,
    body: type[BaseModel] | None = None,
    errors: tuple[str, ...] = ("400",),
    tag: str,
    extra_responses: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": summary.lower().replace(" ", "_").replace("/", "_"),
        "tags": [tag],
        "responses": {"200": _json(response, "Success"), **(extra_responses or {})},
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}},
        }
    for status in errors:
        op["responses"][status] = _json(ErrorBody, ERRORS[status])
    return op


def add_body_errors(document: dict[str, Any]) -> None:
    """Give every operation that takes a JSON body (plugins' included) the answers the core's
    body handling can give it: 400, 408, 413, 415, 422, where the operation lists none."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody", {}) if isinstance(operation, dict) else {}
            if "application/json" not in body.get("content", {}):
                continue
            responses = operation.setdefault("responses", {})
            for status in ("400", "408", "413", "415", "422"):
                responses.setdefault(status, _json(ErrorBody, ERRORS[status]))


def event_stream() -> dict[str, Any]:
    """The ``text/event-stream`` media type of a chat stream, one event at a time."""

    def json_of(model: type[BaseModel]) -> dict[str, Any]:
        return {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": REF.format(model=model.__name__)},
        }

    return {
        "itemSchema": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "description": "A chunk, an in-band error, or `[DONE]` (always last)",
                    "anyOf": [
                        {"const": "[DONE]"},
                        json_of(ChatCompletionChunk),
                        json_of(StreamError),
                    ],
                }
            },
        }
    }


def build_document() -> dict[str, Any]:
    """The core document (before plugins amend it)."""
    models = [
        ChatCompletionRequest, ChatCompletion, ChatCompletionChunk, ErrorBody, StreamError,
        ModelList, CurrentModel, LoadRequest, LoadResult, Health, Readiness,
    ]  # fmt: skip
    _, top = models_json_schema(
        [
            (m, "validation" if m in (ChatCompletionRequest, LoadRequest) else "serialization")
            for m in models
        ],
        ref_template=REF,
    )
    chat = _operation(
        "Create chat completion", ChatCompletion, body=ChatCompletionRequest, errors=BODY_ERRORS,
        tag="chat",
    )  # fmt: skip
    chat["description"] = CHAT_NOTES
    chat["responses"]["200"]["content"]["text/event-stream"] = event_stream()
    health = _operation("Health", Health, tag="health")
    not_ready = _json(Readiness, "No model ready, or a plugin reports a problem")
    return {
        "openapi": "3.2.0",
        "info": {
            "title": "ddx-llm",
            "version": __version__,
            "description": "OpenAI-compatible chat service on MLX.",
        },
        "paths": {
            "/health": {"get": health},
            "/healthz": {"get": {**health, "operationId": "healthz"}},
            "/readyz": {
                "get": _operation(
                    "Readiness", Readiness, tag="health", extra_responses={"503": not_ready}
                )
            },
            "/v1/models": {"get": _operation("List models", ModelList, tag="models")},
            "/v1/models/current": {"get": _operation("Current model", CurrentModel, tag="models")},
            "/v1/models/load": {
                "post": _operation(
                    "Load model", LoadResult, body=LoadRequest, errors=BODY_ERRORS, tag="models"
                )
            },
            "/v1/chat/completions": {"post": chat},
        },
        "components": {"schemas": top.get("$defs", {})},
    }
