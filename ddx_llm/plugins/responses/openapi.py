"""The Responses routes in ``/openapi.json`` (the ``ddx_llm_openapi`` hook).

The request body's schema is generated from :class:`~.request.ResponsesRequest` (what is
validated is what is documented); the answers' shapes are OpenAI's, summarised here — the full
definitions are OpenAI's own (``openai.types.responses``), which the tests validate against.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from .request import ResponsesRequest

REF = "#/components/schemas/{model}"
PREFIX = "Responses."
PREFIXED = "#/components/schemas/" + PREFIX + "{model}"
EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
]
NULLABLE_STRING = {"type": ["string", "null"]}
ITEM = {
    "type": "object",
    "description": "An item: a `message` (input roles with `input_text` parts; `assistant` "
    "with `output_text` parts), a `function_call`, a `function_call_output` or a `reasoning` "
    "item (its `content` holds the model's thinking as `reasoning_text`).",
    "required": ["id", "type"],
    "properties": {
        "id": {"type": "string"},
        "type": {"enum": ["message", "function_call", "function_call_output", "reasoning"]},
        "status": {"enum": ["in_progress", "completed", "incomplete"]},
        "role": {"enum": ["user", "system", "developer", "assistant"]},
        "content": {"type": "array", "items": {"type": "object"}},
        "call_id": {"type": "string"},
        "name": {"type": "string"},
        "arguments": {"type": "string"},
        "output": {"anyOf": [{"type": "string"}, {"type": "array"}]},
        "summary": {"type": "array", "items": {"type": "object"}},
    },
}
RESPONSE = {
    "type": "object",
    "description": "OpenAI's Response object.  `status` is `completed`, `incomplete` (the "
    "output limit was reached: `incomplete_details.reason` is `max_output_tokens`) or `failed` "
    "(`error`; streamed responses only).",
    "required": [
        "id",
        "object",
        "created_at",
        "status",
        "model",
        "output",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    ],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "completed_at": {"type": ["integer", "null"]},
        "status": {"enum": ["in_progress", "completed", "incomplete", "failed"]},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"$ref": REF.format(model="ResponseItem")}},
        "error": {"type": ["object", "null"]},
        "incomplete_details": {"type": ["object", "null"]},
        "instructions": NULLABLE_STRING,
        "previous_response_id": NULLABLE_STRING,
        "store": {"type": "boolean"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "parallel_tool_calls": {"type": "boolean"},
        "usage": {"type": ["object", "null"]},
    },
}
ITEM_LIST = {
    "type": "object",
    "required": ["object", "data", "first_id", "last_id", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"$ref": REF.format(model="ResponseItem")}},
        "first_id": NULLABLE_STRING,
        "last_id": NULLABLE_STRING,
        "has_more": {"type": "boolean"},
    },
}
DELETED = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response.deleted"},
        "deleted": {"const": True},
    },
}
EVENT = {
    "type": "object",
    "description": "One `data:` event of a streamed response; `sequence_number` counts from "
    "0.  Order: created, in_progress, then per output item added … done, then completed, "
    "incomplete or failed.",
    "required": ["type", "sequence_number"],
    "properties": {"type": {"enum": EVENTS}, "sequence_number": {"type": "integer"}},
}


def _json(name: str, description: str) -> dict[str, Any]:
    schema = {"$ref": REF.format(model=name)}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    described = {
        "404": "No such stored response or item for this client (`not_found`)",
        "413": "Request body over the size limit (`request_too_large`)",
        "422": "Invalid or unsupported parameter, named in `detail` (`request_invalid`, "
        "`context_too_long`)",
        "503": "Model loading or at capacity, or the storage does not answer "
        "(`model_unavailable`, `overloaded`, `store_unavailable`)",
    }
    return {code: _json("ErrorBody", described[code]) for code in codes}


def _id_parameter() -> dict[str, Any]:
    return {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}


def amend(document: dict[str, Any]) -> None:
    """Add the four operations and their schemas to ``document``."""
    # The request's own models under a prefix: names such as StreamOptions are the core's too.
    _, top = models_json_schema([(ResponsesRequest, "validation")], ref_template=PREFIXED)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({PREFIX + name: schema for name, schema in top.get("$defs", {}).items()})
    schemas.update(
        Response=RESPONSE,
        ResponseItem=ITEM,
        ResponseItemList=ITEM_LIST,
        ResponseDeleted=DELETED,
        ResponseStreamEvent=EVENT,
    )
    created = _json("Response", "The response (`stream: false`), or its events")
    created["content"]["text/event-stream"] = {
        "schema": {
            "type": "string",
            "description": "`data: <event JSON>` events, then `data: [DONE]`",
        },
        "x-item-schema": {"$ref": REF.format(model="ResponseStreamEvent")},
    }
    paths = document.setdefault("paths", {})
    paths["/v1/responses"] = {
        "post": {
            "summary": "Create response",
            "operationId": "create_response",
            "tags": ["responses"],
            "description": "OpenAI's Responses API on the chat pipeline.  Stored (`store`, "
            "default true) per client identity; `previous_response_id` continues one.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": PREFIXED.format(model="ResponsesRequest")}
                    }
                },
            },
            "responses": {"200": created, **_errors("404", "413", "422", "503")},
        }
    }
    paths["/v1/responses/{response_id}"] = {
        "parameters": [_id_parameter()],
        "get": {
            "summary": "Get response",
            "operationId": "get_response",
            "tags": ["responses"],
            "responses": {"200": _json("Response", "The stored response"), **_errors("404")},
        },
        "delete": {
            "summary": "Delete response",
            "operationId": "delete_response",
            "tags": ["responses"],
            "responses": {"200": _json("ResponseDeleted", "Deleted"), **_errors("404")},
        },
    }
    order = {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}}
    limit = {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
    }
    after = {"name": "after", "in": "query", "schema": {"type": "string"}}
    paths["/v1/responses/{response_id}/input_items"] = {
        "parameters": [_id_parameter()],
        "get": {
            "summary": "List input items",
            "operationId": "list_response_input_items",
            "tags": ["responses"],
            "parameters": [order, limit, after],
            "responses": {
                "200": _json("ResponseItemList", "The conversation the response answered"),
                **_errors("404", "422"),
            },
        },
    }
