"""The mock backend honours structured output: a deterministic, schema-valid instance for a
JSON schema, ``{}`` for json_object, a forced tool call with valid arguments — so a client can
test its JSON handling before going real."""

from __future__ import annotations

import json

import jsonschema
import pytest
from support import running_app

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
ASK = [{"role": "user", "content": "give me data"}]

SCHEMAS = [
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 5},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["cat", "dog"]},
        },
        "required": ["name", "age", "tags", "kind"],
        "additionalProperties": False,
    },
    {
        "$defs": {
            "person": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
                    "score": {"type": "number", "minimum": 0.5},
                    "friend": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/person"}]},
                },
                "required": ["id", "score", "friend"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "people": {
                "type": "array",
                "items": {"$ref": "#/$defs/person"},
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["people"],
        "additionalProperties": False,
    },
]


def schema_format(schema: dict, strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": strict}}


@pytest.mark.parametrize("schema", SCHEMAS, ids=["flat", "bounded", "recursive"])
async def test_a_json_schema_gets_a_valid_instance_the_same_every_time(conf_dir, schema):
    request = {"messages": ASK, "response_format": schema_format(schema)}
    async with running_app(conf_dir) as (_, client):
        answers = [(await client.post(CHAT, json=request)).json() for _ in range(2)]
        streamed = await client.post(CHAT, json={**request, "stream": True})
    text = answers[0]["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(text), schema)
    assert answers[1]["choices"][0]["message"]["content"] == text  # deterministic
    assert answers[0]["choices"][0]["finish_reason"] == "stop"
    pieces = [
        json.loads(line.removeprefix("data: "))["choices"]
        for line in streamed.text.splitlines()
        if line.startswith("data: {")
    ]
    assert "".join(c[0]["delta"].get("content", "") for c in pieces if c) == text


async def test_json_object_gets_an_object_and_wins_over_the_scenario(conf_dir):
    request = {"messages": ASK, "response_format": {"type": "json_object"}}
    async with running_app(conf_dir) as (_, client):
        answer = (await client.post(CHAT, json={**request, "mock": {"scenario": "echo"}})).json()
    assert json.loads(answer["choices"][0]["message"]["content"]) == {}


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "minLength": 1}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "book", "parameters": {
        "type": "object", "properties": {"seats": {"type": "integer", "minimum": 2}},
        "required": ["seats"]}}},
]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
async def test_a_named_tool_is_called_with_valid_arguments(conf_dir, stream):
    choice = {"type": "function", "function": {"name": "book"}}
    request = {"messages": ASK, "tools": TOOLS, "tool_choice": choice, "stream": stream}
    async with running_app(conf_dir) as (_, client):
        response = await client.post(CHAT, json=request)
    if stream:
        chunks = [
            json.loads(line.removeprefix("data: "))["choices"][0]
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        calls = [c["delta"]["tool_calls"][0] for c in chunks if c["delta"].get("tool_calls")]
        name = calls[0]["function"]["name"]
        arguments = "".join(c["function"].get("arguments", "") for c in calls)
        finish = chunks[-1]["finish_reason"]
    else:
        choice_out = response.json()["choices"][0]
        call = choice_out["message"]["tool_calls"][0]
        name, arguments, finish = (
            call["function"]["name"],
            call["function"]["arguments"],
            (choice_out["finish_reason"]),
        )
    assert (name, finish) == ("book", "tool_calls")
    jsonschema.validate(json.loads(arguments), TOOLS[1]["function"]["parameters"])


async def test_required_with_several_tools_calls_one_of_them(conf_dir):
    request = {"messages": ASK, "tools": TOOLS, "tool_choice": "required"}
    async with running_app(conf_dir) as (_, client):
        call = (await client.post(CHAT, json=request)).json()["choices"][0]["message"]
    function = call["tool_calls"][0]["function"]
    schema = next(t for t in TOOLS if t["function"]["name"] == function["name"])
    jsonschema.validate(json.loads(function["arguments"]), schema["function"]["parameters"])


async def test_max_tokens_inside_the_json_ends_with_length(conf_dir):
    request = {"messages": ASK, "response_format": schema_format(SCHEMAS[1]), "max_tokens": 2}
    async with running_app(conf_dir) as (_, client):
        choice = (await client.post(CHAT, json=request)).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    with pytest.raises(json.JSONDecodeError):  # documented: the text is then incomplete JSON
        json.loads(choice["message"]["content"])


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (
            {
                "response_format": schema_format(
                    {
                        "type": "object",
                        "properties": {"a": {"type": "string", "pattern": "(unclosed"}},
                        "required": ["a"],
                    }
                )
            },
            "response_format",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
    ],
)
async def test_what_cannot_be_honoured_is_422_naming_the_field(conf_dir, extra, field):
    async with running_app(conf_dir) as (_, client):
        response = await client.post(CHAT, json={"messages": ASK, **extra})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "request_invalid"
    assert response.json()["detail"][0]["field"] == field
