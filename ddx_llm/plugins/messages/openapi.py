"""The Messages routes in ``/openapi.json``: paths, headers, bodies, events and errors.

Component schemas are generated from the same pydantic models that validate the requests and
build the answers, named with an ``Anthropic`` prefix so they never collide with the core's
(``Usage``, ``Tool`` ...).  :func:`add_paths` runs before the other plugins amend the document
(the ``auth`` plugin then adds ``security`` and its 401 to the protected operations);
:func:`restate_errors` runs after them and points every error response of these operations at
Anthropic's error body, the shape these routes answer in.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from .message_schema import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    ErrorResponse,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    Ping,
    TokenCount,
)
from .request_schema import CountTokensRequest, MessagesRequest

PREFIX = "Anthropic"
REF = "#/components/schemas/" + PREFIX + "{model}"
PATHS = ("/v1/messages", "/v1/messages/count_tokens")
EVENTS = (MessageStart, ContentBlockStart, ContentBlockDelta, ContentBlockStop, MessageDelta,
          MessageStop, Ping)  # fmt: skip
ERRORS = {
    "400": "Invalid request, or a field no backend here can honour (`invalid_request_error`)",
    "404": "Unknown model (`not_found_error`)",
    "408": "The request body did not arrive in time (`invalid_request_error`)",
    "413": "Request body over the size limit (`request_too_large`)",
    "415": "The body is not declared JSON (`invalid_request_error`)",
    "500": "Unexpected failure (`api_error`)",
    "503": "No model ready: loading, failed, or shutting down (`overloaded_error`)",
    "529": "At capacity (`overloaded_error`)",
}
HEADERS = [
    {
        "name": "anthropic-version",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "example": "2023-06-01"},
        "description": "Accepted (the SDKs send it); every version gets the same answers.",
    },
    {
        "name": "anthropic-beta",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Accepted; a beta feature's request fields are refused by name if used.",
    },
]


NOTES = (
    "Anthropic's Messages API.  Beyond the schema: the prompt's tokens plus `max_tokens` must "
    "fit the model's context window, `thinking.budget_tokens` must be below `max_tokens`, and a "
    "backend refuses what it cannot honour (a forced `tool_choice` without constrained "
    "decoding) — each a 400 naming the field.  With `stream: true` the answer is a server-sent "
    "event stream: `message_start` first, `message_stop` last, `ping` while idle, an in-band "
    "`error` event if generation fails after the headers."
)


def _ref(model: type) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def event_stream() -> dict[str, Any]:
    """The ``text/event-stream`` media type, one event at a time (OpenAPI 3.2 ``itemSchema``):
    the event's name is its data's ``type``."""

    def json_of(model: type) -> dict[str, Any]:
        return {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": _ref(model),
        }

    names = [event.model_fields["type"].default for event in EVENTS]
    return {
        "itemSchema": {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"enum": [*names, "error"]},
                "data": {"anyOf": [*(json_of(event) for event in EVENTS), json_of(ErrorResponse)]},
            },
        }
    }


def add_paths(document: dict[str, Any]) -> None:
    """Add the two operations and their component schemas."""
    models = [(MessagesRequest, "validation"), (CountTokensRequest, "validation")]
    models += [(m, "serialization") for m in (Message, TokenCount, ErrorResponse, *EVENTS)]
    _, top = models_json_schema(models, ref_template=REF)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in top.get("$defs", {}).items():
        schemas[PREFIX + name] = schema
    create = _operation("Create message", MessagesRequest, Message)
    create["description"] = NOTES
    create["responses"]["200"]["content"]["text/event-stream"] = event_stream()
    count = _operation("Count message tokens", CountTokensRequest, TokenCount)
    paths = document.setdefault("paths", {})
    paths[PATHS[0]] = {"post": create}
    paths[PATHS[1]] = {"post": count}


def _operation(summary: str, body: type, answer: type) -> dict[str, Any]:
    responses = {"200": _json(answer, "Success")}
    responses.update({status: _json(ErrorResponse, text) for status, text in ERRORS.items()})
    return {
        "summary": summary,
        "operationId": "anthropic_" + summary.lower().replace(" ", "_"),
        "tags": ["anthropic"],
        "parameters": HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
        "responses": responses,
    }


def restate_errors(document: dict[str, Any]) -> None:
    """Point every 4xx/5xx response of the two operations at Anthropic's error body."""
    for path in PATHS:
        operation = document.get("paths", {}).get(path, {}).get("post", {})
        for status, response in operation.get("responses", {}).items():
            if status[0] in "45" and isinstance(response, dict):
                response["content"] = {"application/json": {"schema": _ref(ErrorResponse)}}
