"""Schemas, tools and a grammar walk shared by the structured-output tests of the mlx backend.

Every schema bounds its strings, numbers and arrays, so that any walk through its grammar — a
real model's at any temperature, or :func:`walk`'s random one — ends within a few dozen tokens.
"""

from __future__ import annotations

from typing import Any

SCHEMAS: dict[str, dict[str, Any]] = {
    "enum": {
        "type": "object",
        "properties": {"capital": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]}},
        "required": ["capital"],
        "additionalProperties": False,
    },
    "bounds_and_pattern": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2, "maxLength": 10},
            "rank": {"type": "integer", "minimum": 1, "maximum": 9},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
        "required": ["city", "rank", "code"],
        "additionalProperties": False,
    },
    "defs_ref_anyof_items": {
        "$defs": {
            "place": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 8},
                    "kind": {"enum": ["city", "town"]},
                },
                "required": ["name", "kind"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "places": {"type": "array", "items": {"$ref": "#/$defs/place"}, "minItems": 1,
                       "maxItems": 2},
            "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 6}]},
        },
        "required": ["places", "note"],
        "additionalProperties": False,
    },
}  # fmt: skip
"""Schemas of increasing difficulty: an enum; string lengths, integer bounds and a pattern;
``$defs``/``$ref``, ``anyOf``, ``minItems``/``maxItems``, ``additionalProperties: false``."""

BAD_SCHEMAS = [
    ({"type": "strin"}, "Invalid type"),
    ({"type": "string", "pattern": "(?=x)"}, "look-around"),
    ({"$ref": "#/$defs/missing"}, "missing"),
    ({"not": {"type": "string"}}, "not"),
]
"""Schemas llguidance cannot compile or enforce, with a word of its reason."""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "minLength": 2, "maxLength": 16}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}, "hours": {"type": "integer",
                           "minimum": 0, "maximum": 23}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}  # fmt: skip
TOOLS = [WEATHER, CLOCK]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


def json_format(schema: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                   "strict": strict}}  # fmt: skip


def walk(processor: Any, vocab: int, seed: int, limit: int = 400) -> list[int]:
    """Tokens chosen through ``processor`` as a model would, with random logits for the model:
    at each step the highest of the masked logits.  Ends with the end token (or at ``limit``)."""
    import mlx.core as mx

    key = mx.random.key(seed)
    context, tokens = [1], []
    for _ in range(limit):
        key, draw = mx.random.split(key)
        logits = mx.random.normal((1, vocab), key=draw)
        token = int(mx.argmax(processor(mx.array(context), logits), axis=-1).item())
        tokens.append(token)
        context.append(token)
        if token in processor.end_tokens:
            break
    processor(mx.array(context), mx.zeros((1, vocab)))  # feeds the last token
    return tokens
