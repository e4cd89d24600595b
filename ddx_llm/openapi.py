"""The OpenAPI 3.1 document, generated from the same pydantic schemas that validate requests.

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
)

REF = "#/components/schemas/{model}"

ERRORS = {
    "404": "Unknown model or route (`model_not_found`, `not_found`)",
    "413": "Request body over the size limit (`request_too_large`)",
    "422": "Invalid request or context too long (`request_invalid`, `context_too_long`)",
    "500": "Unexpected failure (`llm_error`)",
    "503": "Model loading, failed or at capacity (`model_unavailable`, `overloaded`)",
}


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
    errors: tuple[str, ...] = (),
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


def build_document() -> dict[str, Any]:
    """The core document (before plugins amend it)."""
    models = [
        ChatCompletionRequest, ChatCompletion, ChatCompletionChunk, ErrorBody, ModelList,
        CurrentModel, LoadRequest, LoadResult, Health, Readiness,
    ]  # fmt: skip
    _, top = models_json_schema(
        [
            (m, "validation" if m in (ChatCompletionRequest, LoadRequest) else "serialization")
            for m in models
        ],
        ref_template=REF,
    )
    chat = _operation(
        "Create chat completion",
        ChatCompletion,
        body=ChatCompletionRequest,
        errors=("404", "413", "422", "500", "503"),
        tag="chat",
    )
    chat["responses"]["200"]["content"]["text/event-stream"] = {
        "schema": {
            "type": "string",
            "description": "`data: <chunk JSON>` events, then `data: [DONE]`",
        },
        "x-item-schema": {"$ref": REF.format(model="ChatCompletionChunk")},
    }
    health = _operation("Health", Health, tag="health")
    not_ready = _json(Readiness, "No model ready, or a plugin reports a problem")
    return {
        "openapi": "3.1.0",
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
                    "Load model",
                    LoadResult,
                    body=LoadRequest,
                    errors=("404", "413", "422", "500", "503"),
                    tag="models",
                )
            },
            "/v1/chat/completions": {"post": chat},
        },
        "components": {"schemas": top.get("$defs", {})},
    }
