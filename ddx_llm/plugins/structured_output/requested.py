"""What a chat request asks for: a JSON schema, any JSON object, or a forced tool call.

:func:`constraint` reads ``response_format`` and ``tool_choice`` (with ``tools``) into one
:class:`Constraint`, or None when the request asks for free text.  Its grammar (llguidance's
JSON-schema compiler) is compiled and checked once per schema (:func:`grammar`), so a request
that cannot be honoured gets 422 ``request_invalid`` naming the field and the engine's message
before anything is generated.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from ddx_llm.errors import RequestInvalid
from ddx_llm.schemas import ChatCompletionRequest

ANY_OBJECT: dict[str, Any] = {"type": "object"}
COMPILE_OPTIONS = {"whitespace_flexible": False}
"""Compact JSON (no free whitespace): a model cannot pad the answer with endless blanks."""
GRAMMAR_CACHE = 256


@dataclass(frozen=True)
class Constraint:
    """One request's structure: ``kind`` is ``json_schema``, ``json_object`` or ``tool_call``;
    ``schema`` the JSON schema of the answer (of the arguments, for a tool call); ``tool`` the
    function to call (``tool_call`` only); ``field`` the request field that asked for it."""

    kind: str
    schema: dict[str, Any]
    field: str
    tool: str | None = None


def invalid(field: str, message: str) -> RequestInvalid:
    return RequestInvalid(
        f"{field}: {message}", detail=[{"field": field, "message": message, "type": "unsupported"}]
    )


def constraint(request: ChatCompletionRequest) -> Constraint | None:
    """The structure ``request`` asks for, or None (free text).  Raises RequestInvalid for a
    malformed ``response_format`` or a ``tool_choice`` naming no given tool."""
    choice = request.tool_choice
    if choice is not None and choice not in ("auto", "none"):
        return _tool_constraint(request)
    form = request.response_format
    if form is None:
        return None
    kind = form.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return Constraint("json_object", ANY_OBJECT, "response_format")
    if kind != "json_schema":
        raise invalid("response_format", f"type {kind!r} is not text, json_object or json_schema")
    spec = form.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise invalid("response_format.json_schema", "must be an object with a schema object")
    return Constraint("json_schema", spec.get("schema") or ANY_OBJECT, "response_format")


def _tool_constraint(request: ChatCompletionRequest) -> Constraint:
    tools = {tool.function.name: tool for tool in request.tools or []}
    if not tools:
        raise invalid("tool_choice", "forces a tool call, but the request gives no tools")
    choice = request.tool_choice
    if choice == "required":
        if len(tools) > 1:
            names = sorted(tools)
            return Constraint("tool_call", _one_of_calls(tools, names), "tool_choice", None)
        name = next(iter(tools))
    else:
        name = choice.function.name
        if name not in tools:
            raise invalid("tool_choice", f"names the function {name!r}, which is not in tools")
    parameters = tools[name].function.parameters or ANY_OBJECT
    return Constraint("tool_call", parameters, "tool_choice", name)


def _one_of_calls(tools: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A schema of ``{"name": ..., "arguments": ...}`` for any of ``names`` (``required`` with
    several tools: the model chooses which)."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": name},
                    "arguments": tools[name].function.parameters or ANY_OBJECT,
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for name in names
        ]
    }


def grammar(item: Constraint) -> str:
    """The llguidance grammar of ``item``'s schema, compiled and checked (cached per schema).
    Raises RequestInvalid naming the field and the engine's reason."""
    # key order kept: llguidance writes properties in the schema's order (an answer's fields
    # come in the order the client gave, e.g. reasoning before the verdict)
    return _compiled(json.dumps(item.schema), item.field)


@functools.lru_cache(maxsize=GRAMMAR_CACHE)
def _compiled(schema: str, field: str) -> str:
    import llguidance

    try:
        compiled = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=COMPILE_OPTIONS)
    except ValueError as exc:
        raise invalid(field, f"the JSON schema is not valid: {exc}") from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(compiled)
    if is_error:
        raise invalid(field, f"the JSON schema cannot be enforced: {messages[0]}")
    return compiled
