"""``POST /v1/completions`` in ``/openapi.json`` (the ``ddx_llm_openapi`` hook).

The request body's schema is generated from :class:`~.request.CompletionRequest` and the answer's
from :class:`~.shaping.Completion` (what is validated and sent is what is documented), under
the prefix ``Completions.`` so that names such as ``StreamOptions`` stay the core's.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from .request import CompletionRequest
from .shaping import Completion

PREFIX = "Completions."
REF = "#/components/schemas/" + PREFIX + "{model}"
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
NOTES = (
    "OpenAI's legacy text completions (enabled by `[completions] enabled`).  One text prompt "
    "per request; `n` and `best_of` 1; no `suffix`; `echo` without `logprobs`; `max_tokens` "
    "(default 16) at least 1 — other values get 422 `request_invalid` naming the field.  The "
    "prompt's tokens plus `max_tokens` must fit the model's context window (else 422 "
    "`context_too_long`).  With `stream: true` the answer is a server-sent event stream of "
    "`text_completion` chunks, an in-band error event if generation fails after the headers, "
    "then `[DONE]`."
)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def add_path(document: dict[str, Any], path: str) -> None:
    """Add the operation and its schemas to ``document``."""
    _, top = models_json_schema(
        [(CompletionRequest, "validation"), (Completion, "serialization")], ref_template=REF
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({PREFIX + name: schema for name, schema in top.get("$defs", {}).items()})
    completion = {"$ref": REF.format(model="Completion")}
    chunk_or_error = {
        "anyOf": [
            {"const": "[DONE]"},
            {"type": "string", "contentMediaType": "application/json", "contentSchema": completion},
            {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/StreamError"},
            },
        ],
        "description": "A chunk, an in-band error, or `[DONE]` (always last)",
    }
    document["paths"][path] = {
        "post": {
            "summary": "Create completion",
            "operationId": "create_completion",
            "tags": ["completions"],
            "description": NOTES,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model="CompletionRequest")}}
                },
            },
            "responses": {
                "200": {
                    "description": "The completion, or its chunks (`stream: true`)",
                    "content": {
                        "application/json": {"schema": completion},
                        "text/event-stream": {
                            "itemSchema": {
                                "type": "object",
                                "required": ["data"],
                                "properties": {"data": chunk_or_error},
                            }
                        },
                    },
                },
                "404": _error("Unknown model (`model_not_found`)"),
                "500": _error("Unexpected failure (`llm_error`)"),
                "503": _error(
                    "Model loading, failed or at capacity (`model_unavailable`, `overloaded`)"
                ),
            },
        }
    }
