"""What ``POST /v1/responses`` accepts and refuses, and the chat request it becomes.

Refusals answer 422 ``request_invalid`` naming the field (in ``detail`` and in the message), in
our body and OpenAI's ``error`` envelope; a chat-completions field sent here by mistake gets
the Responses field to use.
"""

from __future__ import annotations

import pytest
from responses_support import MODEL
from support import documented

from ddx_llm import testing
from ddx_llm.errors import RequestInvalid
from ddx_llm.plugins.responses.convert import chat_request, responses_fields
from ddx_llm.plugins.responses.items import parse_input
from ddx_llm.plugins.responses.request import parse_request

pytestmark = pytest.mark.anyio

URL = "/v1/responses"
USER = [{"role": "user", "content": "hi"}]
IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png"}
FILE = {"type": "input_file", "file_id": "file-1"}
REFUSED = [
    ({"tools": [{"type": "web_search"}]}, "tools.0.type", "built-in tools"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools.0.type", "built-in"),
    ({"tools": [{"type": "function", "name": "f", "defer_loading": True}]}, "tools.0.defer_loading",
     "Extra inputs"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "only none, auto"),
    ({"background": True}, "background", "background responses"),
    ({"truncation": "auto"}, "truncation", "context_too_long"),
    ({"conversation": "conv_1"}, "conversation", "previous_response_id"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt", "prompt templates"),
    ({"prompt_cache_retention": "24h"}, "prompt_cache_retention", "retention"),
    ({"service_tier": "flex"}, "service_tier", "auto"),
    ({"reasoning": {"effort": "high"}}, "reasoning.effort", "reasoning items"),
    ({"include": ["reasoning.encrypted_content"]}, "include.0", "cannot be included"),
    ({"text": {"verbosity": "low"}}, "text.verbosity", "medium"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format", "a name"),
    ({"max_tokens": 10}, "max_tokens", "max_output_tokens"),
    ({"messages": USER}, "messages", "use input"),
    ({"response_format": {"type": "json_object"}}, "response_format", "text.format"),
    ({"stop": ["x"]}, "stop", "/v1/chat/completions"),
    ({"temperature": "1"}, "temperature", "valid number"),
    ({"max_output_tokens": 0}, "max_output_tokens", "greater than or equal to 1"),
    ({"metadata": {"k": 1}}, "metadata.k", "valid string"),
    ({"input": [{"role": "user", "content": [IMAGE]}]}, "input.0.content.0", "image inputs"),
    ({"input": [{"role": "user", "content": [FILE]}]}, "input.0.content.0", "file inputs"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": [IMAGE]}]},
     "input.0.output.0", "image inputs"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input.0.type", "built-in tools"),
    ({"input": [{"type": "telepathy"}]}, "input.0.type", "unknown input item type"),
    ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": "x"}]},
     "input.0.encrypted_content", "no encrypted reasoning"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role", "Input should be"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input.0.arguments",
     "Field required"),
    ({"input": []}, "input", "nothing to answer"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "field", "reason"), REFUSED, ids=[r[1] for r in REFUSED])
async def test_refused_fields_are_named(conf_dir, fields, field, reason):
    body = {"model": MODEL, "input": USER, **fields}
    async with testing.serve(conf_dir) as service:
        answer = await service.client.post(URL, json=body)
    assert answer.status_code == 422, answer.text
    error = documented(answer.json())
    assert error["code"] == "request_invalid"
    assert [item["field"] for item in error["detail"]] == [field]
    assert field in error["message"]
    assert reason in error["detail"][0]["message"], error


async def test_errors_carry_openai_envelope_and_status(conf_dir):
    async with testing.serve(conf_dir) as service:
        unknown_model = await service.client.post(URL, json={"model": "nope", "input": "hi"})
        not_json = await service.client.post(
            URL, content=b"{", headers={"content-type": "application/json"}
        )
    assert unknown_model.status_code == 404
    assert documented(unknown_model.json())["code"] == "model_not_found"
    assert not_json.status_code == 422


async def test_a_backend_refusal_names_the_field_the_client_sent(conf_dir):
    bad_schema = {"type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}
    async with testing.serve(conf_dir) as service:
        answer = await service.client.post(
            URL, json={"model": MODEL, "input": "hi", "text": {"format": bad_schema}}
        )
    error = documented(answer.json())
    assert answer.status_code == 422 and error["code"] == "request_invalid"
    assert [item["field"] for item in error["detail"]] == ["text.format"]
    assert error["message"].startswith("text.format: ") and "response_format" not in str(error)


def test_refusals_of_the_chat_request_are_restated_in_responses_fields():
    refusal = RequestInvalid(
        "not supported by the omni backend: logprobs, response_format.json_schema, "
        "messages.3.content.0, tools.1.function.parameters, max_tokens, top_logprobs",
        detail=[{"field": "logprobs"}, {"field": "messages.3.content.0"}, "other"],
    )
    restated = responses_fields(refusal)
    assert restated.message == (
        "not supported by the omni backend: include, text.format, input, tools.1.parameters, "
        "max_output_tokens, top_logprobs"
    )
    assert restated.detail == [{"field": "include"}, {"field": "input"}, "other"]


def chat_of(body: dict) -> dict:
    request = parse_request({"model": MODEL, **body})
    return chat_request(request, parse_input(request.input)).model_dump(exclude_none=True)


def test_a_conversation_becomes_chat_messages():
    chat = chat_of({
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather "},
                                         {"type": "input_text", "text": "in Berlin?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [],
             "content": [{"type": "reasoning_text", "text": "They want weather."}]},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": '{"city":"Berlin"}', "id": "fc_1", "status": "completed"},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
            {"type": "function_call_output", "call_id": "call_2",
             "output": [{"type": "input_text", "text": "noon"}]},
        ],
    })  # fmt: skip
    messages = [
        (m["role"], m.get("content"), [c["id"] for c in m.get("tool_calls", [])])
        for m in chat["messages"]
    ]
    assert messages == [
        ("system", "Be brief.", []),
        ("developer", "Use metric units.", []),
        ("user", "Weather in Berlin?", []),
        ("assistant", "Checking.", ["call_1", "call_2"]),
        ("tool", "Sunny", []),
        ("tool", "noon", []),
    ]
    assert chat["messages"][3]["tool_calls"][0]["function"]["arguments"] == '{"city":"Berlin"}'


def test_parameters_map_to_the_chat_request():
    chat = chat_of({
        "input": "hi", "temperature": 0.5, "top_p": 0.9, "max_output_tokens": 16.0,
        "parallel_tool_calls": False, "user": "u1", "stream": True,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"},
                   "strict": True}],
        "tool_choice": {"type": "function", "name": "f"},
        "include": ["message.output_text.logprobs"], "top_logprobs": 3,
        "text": {"format": {"type": "json_object"}},
        "mock": {"scenario": "echo"}, "top_k": 20,
    })  # fmt: skip
    assert chat["max_completion_tokens"] == 16
    assert (chat["temperature"], chat["top_p"], chat["parallel_tool_calls"]) == (0.5, 0.9, False)
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                          "strict": True}}
    ]  # fmt: skip
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 3)
    assert chat["response_format"] == {"type": "json_object"}
    assert (chat["mock"], chat["top_k"], chat["user"], chat["stream"]) == (
        {"scenario": "echo"}, 20, "u1", True,
    )  # fmt: skip


def test_accepted_hints_are_echoed_not_refused():
    request = parse_request({
        "input": "hi", "prompt_cache_key": "k", "safety_identifier": "s", "max_tool_calls": 2,
        "service_tier": "auto", "truncation": "disabled", "background": False,
        "reasoning": {"effort": None}, "stream_options": {"include_obfuscation": False},
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
    })  # fmt: skip
    assert (request.prompt_cache_key, request.safety_identifier) == ("k", "s")
