"""Translating an Anthropic Messages request into the core's chat request."""

from __future__ import annotations

from typing import Any

import pytest

from ddx_llm.errors import RequestInvalid
from ddx_llm.plugins.messages.request import field_path, parse, to_chat
from ddx_llm.plugins.messages.request_schema import CountTokensRequest, MessagesRequest


def chat(**fields: Any):
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    return to_chat(parse(MessagesRequest, {**body, **fields}))


def plain(message) -> dict[str, Any]:
    return message.model_dump(exclude_none=True)


def test_fields_that_map_one_to_one():
    request = chat(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stream=True,
        metadata={"user_id": "u-1"},
        mock={"scenario": "echo"},
        stop_sequences=["END"],
    )
    assert (request.model, request.max_tokens, request.temperature, request.top_p) == (
        "m",
        10,
        0.2,
        0.9,
    )
    assert request.top_k == 40
    assert request.stream and request.user == "u-1"
    assert request.model_extra["mock"] == {"scenario": "echo"}
    assert request.stop is None  # matched by the surface, which reports which one stopped


def test_system_as_a_string_or_text_blocks():
    as_string = chat(system="Be brief.")
    blocks = [
        {"type": "text", "text": "Be "},
        {"type": "text", "text": "brief.", "cache_control": {"type": "ephemeral"}},
    ]
    as_blocks = chat(system=blocks)
    assert as_string.messages[0].role == as_blocks.messages[0].role == "system"
    assert as_string.messages[0].text() == as_blocks.messages[0].text() == "Be brief."
    assert len(as_blocks.messages[0].content) == 2  # blocks stay parts


def test_a_tool_round_trip():
    messages = [
        {"role": "user", "content": "Weather in Berlin?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "s"},
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "t1",
                    "name": "get_weather",
                    "input": {"city": "Berlin"},
                },
                {"type": "tool_use", "id": "t2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Here you are."},
                {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "clock "},
                        {"type": "text", "text": "down"},
                    ],
                },
            ],
        },
    ]
    tools = [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    request = chat(
        messages=messages,
        tools=tools,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    user, assistant, result1, result2, text = request.messages
    assert (user.role, user.text()) == ("user", "Weather in Berlin?")
    assert assistant.role == "assistant" and assistant.text() == "Let me check."
    assert assistant.model_extra["reasoning_content"] == "Use the tool."
    calls = [(c.id, c.function.name, c.function.arguments) for c in assistant.tool_calls]
    assert calls == [("t1", "get_weather", '{"city": "Berlin"}'), ("t2", "get_time", "{}")]
    assert plain(result1) == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    assert plain(result2) == {"role": "tool", "tool_call_id": "t2", "content": "Error: clock down"}
    assert (text.role, text.text()) == ("user", "Here you are.")  # after the results
    [tool] = request.tools
    assert tool.function.name == "get_weather" and tool.function.description == "Weather"
    assert tool.function.parameters == tools[0]["input_schema"]
    assert request.tool_choice == "auto" and request.parallel_tool_calls is False


def test_consecutive_turns_of_one_role_are_combined():
    request = chat(
        messages=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}],
            },
            {"role": "assistant", "content": "said"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}]},
            {"role": "user", "content": "three"},
        ]
    )
    roles = [message.role for message in request.messages]
    assert roles == ["user", "assistant", "tool", "user"]
    assert request.messages[0].text() == "onetwo"  # blocks of one turn: parts, joined as text
    assert request.messages[1].text() == "said" and len(request.messages[1].tool_calls) == 1


def test_tool_choice_kinds():
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    assert chat(tools=tools, tool_choice={"type": "any"}).tool_choice == "required"
    named = chat(tools=tools, tool_choice={"type": "tool", "name": "f"}).tool_choice
    assert named.model_dump() == {"type": "function", "function": {"name": "f"}}


def test_tool_choice_none_and_no_tool_choice():
    assert chat(tool_choice={"type": "none"}).tool_choice == "none"
    assert chat().tool_choice is None and chat().parallel_tool_calls is None


def test_count_tokens_request_has_no_generation_fields():
    request = to_chat(
        parse(CountTokensRequest, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    )
    assert request.max_tokens is None and request.stream is False
    with pytest.raises(RequestInvalid, match="max_tokens: Extra inputs"):
        parse(
            CountTokensRequest,
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3},
        )


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("messages", 0, "content", "str"), "messages.0.content"),
        (
            ("messages", 0, "content", "list[...]", 1, "tool_result", "tool_use_id"),
            "messages.0.content.1.tool_use_id",
        ),
        (("missing_field",), "missing_field"),
        ((), "(body)"),
    ],
)
def test_field_paths_leave_out_union_labels(loc, path):
    data = {"messages": [{"content": [{"type": "text"}, {"type": "tool_result"}]}]}
    assert field_path(data, loc) == path
