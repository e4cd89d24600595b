"""``POST /v1/messages`` and ``/v1/messages/count_tokens`` in process on the mock backend: every
answer and every stream event validated against the ``anthropic`` SDK's types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from messages_support import error, message, sse, stream_events, text_of, token_count

from ddx_llm import hookimpl, testing
from ddx_llm.events import RequestDone

pytestmark = pytest.mark.anyio

MODEL = testing.TEST_MODEL["id"]
PROMPT = "What is the weather in Berlin today"
USER = [{"role": "user", "content": PROMPT}]


def ask(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": USER, **fields}


def echo(**fields: Any) -> dict[str, Any]:
    return ask(mock={"scenario": "echo", **fields.pop("mock", {})}, **fields)


class Recorder:
    """Keeps every RequestDone."""

    def __init__(self) -> None:
        self.done: list[RequestDone] = []

    @hookimpl
    def ddx_llm_observe(self, event):
        if isinstance(event, RequestDone):
            self.done.append(event)


def serve(tmp_path: Path, recorder: Recorder | None = None, **sections: dict):
    conf = testing.write_conf(tmp_path, {"messages": {"ping_seconds": 0.05}, **sections})
    plugins = [("recorder", recorder)] if recorder else []
    return testing.serve(conf, plugins=plugins)


async def test_the_canned_tool_call_as_a_message(tmp_path):
    async with serve(tmp_path) as service:
        response = await service.client.post("/v1/messages", json=ask())
    assert response.status_code == 200
    answer = message(response.json())
    assert answer.stop_reason == "tool_use" and answer.stop_sequence is None
    [call] = answer.content
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Berlin"})
    assert answer.model == MODEL and answer.id.startswith("msg_")
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens == 3
    assert response.headers["request-id"] == response.headers["x-request-id"]


async def test_echo_and_its_token_count_agree(tmp_path):
    async with serve(tmp_path) as service:
        created = await service.client.post("/v1/messages", json=echo(system="Be brief."))
        counted = await service.client.post(
            "/v1/messages/count_tokens",
            json={"model": MODEL, "messages": USER, "system": "Be brief."},
        )
    answer = message(created.json())
    assert text_of(answer) == PROMPT and answer.stop_reason == "end_turn"
    assert counted.status_code == 200
    assert token_count(counted.json()) == answer.usage.input_tokens > 0


async def test_a_stream_of_text(tmp_path):
    async with serve(tmp_path) as service:
        plain = message((await service.client.post("/v1/messages", json=echo())).json())
        response = await service.client.post("/v1/messages", json=echo(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = stream_events(response.text)
    kinds = [event["type"] for event in events]
    words = len(PROMPT.split())
    assert kinds == [
        "message_start", "content_block_start", *["content_block_delta"] * words,
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == MODEL
    # the prompt's size is known before the first token, as Anthropic reports it
    assert start["usage"] == {"input_tokens": plain.usage.input_tokens, "output_tokens": 0}
    assert plain.usage.input_tokens > 0
    assert events[1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(e["delta"]["text"] for e in events[2:-3]) == PROMPT
    final = events[-2]
    assert final["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert final["usage"] == {
        "input_tokens": plain.usage.input_tokens,
        "output_tokens": plain.usage.output_tokens,
    }


async def test_a_streamed_tool_call_sends_its_input_as_json_pieces(tmp_path):
    async with serve(tmp_path) as service:
        response = await service.client.post("/v1/messages", json=ask(stream=True))
    events = stream_events(response.text)
    start = events[1]["content_block"]
    assert start == {"type": "tool_use", "id": "call_0", "name": "get_weather", "input": {}}
    pieces = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert all(piece["type"] == "input_json_delta" for piece in pieces) and len(pieces) == 2
    assert "".join(piece["partial_json"] for piece in pieces) == '{"city":"Berlin"}'
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


WEATHER = {
    "name": "get_weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    },
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


@pytest.mark.parametrize(
    ("choice", "names"),
    [({"type": "tool", "name": "get_weather"}, {"get_weather"}),
     ({"type": "any"}, {"get_weather", "get_time"})],
)  # fmt: skip
async def test_a_forced_tool_call(tmp_path, choice, names):
    """``any`` / ``tool`` reach the backend as chat's ``required`` / named function; the mock
    honours them with arguments valid against the tool's schema."""
    import jsonschema

    body = echo(tools=[WEATHER, TIME], tool_choice=choice)
    async with serve(tmp_path) as service:
        response = await service.client.post("/v1/messages", json=body)
        unknown = await service.client.post(
            "/v1/messages", json={**body, "tool_choice": {"type": "tool", "name": "nope"}}
        )
    answer = message(response.json())
    [call] = answer.content
    assert answer.stop_reason == "tool_use" and call.name in names
    schema = (WEATHER if call.name == "get_weather" else TIME)["input_schema"]
    jsonschema.validate(call.input, schema)
    assert unknown.status_code == 400
    assert error(unknown.json(), "invalid_request_error")["message"].startswith("tool_choice")


@pytest.mark.parametrize(
    "thinking", [None, {"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}]
)
async def test_reasoning_comes_back_as_thinking_blocks(tmp_path, thinking):
    body = ask(mock={"scenario": "reasoning"}, max_tokens=2000)
    if thinking:
        body["thinking"] = thinking
    async with serve(tmp_path) as service:
        plain = await service.client.post("/v1/messages", json=body)
        streamed = await service.client.post("/v1/messages", json={**body, "stream": True})
    answer = message(plain.json())
    thinking, text = answer.content
    assert thinking.type == "thinking" and thinking.thinking == f"Thinking about: {PROMPT}"
    assert text.type == "text" and text.text == PROMPT
    events = stream_events(streamed.text)
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text"]
    thought = "".join(
        e["delta"]["thinking"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "thinking_delta"
    )
    assert thought == thinking.thinking


@pytest.mark.parametrize(
    ("sequences", "text", "matched"),
    [
        (["Berlin"], "What is the weather in ", "Berlin"),
        (["the weather", "is"], "What ", "is"),  # the earliest match wins
        (["weather in Ber"], "What is the ", "weather in Ber"),  # across three pieces
        (["Paris"], PROMPT, None),
    ],
)
async def test_stop_sequences(tmp_path, sequences, text, matched):
    recorder = Recorder()
    async with serve(tmp_path, recorder) as service:
        body = echo(stop_sequences=sequences)
        plain = message((await service.client.post("/v1/messages", json=body)).json())
        streamed = await service.client.post("/v1/messages", json={**body, "stream": True})
    assert text_of(plain) == text
    assert plain.stop_sequence == matched
    assert plain.stop_reason == ("stop_sequence" if matched else "end_turn")
    events = stream_events(streamed.text)
    deltas = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert "".join(deltas) == text
    assert events[-2]["delta"] == {"stop_reason": plain.stop_reason, "stop_sequence": matched}
    assert plain.usage.input_tokens == recorder.done[0].prompt_tokens > 0
    assert events[-2]["usage"]["input_tokens"] == plain.usage.input_tokens


async def test_max_tokens_is_the_stop_reason_when_reached(tmp_path):
    async with serve(tmp_path) as service:
        response = await service.client.post("/v1/messages", json=echo(max_tokens=2))
    answer = message(response.json())
    assert text_of(answer) == "What is" and answer.stop_reason == "max_tokens"
    assert answer.usage.output_tokens == 2


async def test_pings_keep_a_slow_stream_alive(tmp_path):
    body = echo(stream=True, max_tokens=2, mock={"token_delay_ms": 300})
    async with serve(tmp_path) as service:
        response = await service.client.post("/v1/messages", json=body)
    names = [name for name, _ in sse(response.text)]
    first_text = names.index("content_block_start")
    assert names[0] == "message_start"
    assert names[1:first_text].count("ping") >= 2, names  # 300 ms before the first word
    stream_events(response.text)


async def test_a_failure_mid_stream_is_an_error_event(tmp_path):
    body = echo(mock={"scenario": "error"})
    async with serve(tmp_path) as service:
        streamed = await service.client.post("/v1/messages", json={**body, "stream": True})
        plain = await service.client.post("/v1/messages", json=body)
    events = stream_events(streamed.text)
    assert events[-1]["type"] == "error"
    failure = error(events[-1], "api_error")
    assert failure["code"] == "llm_error" and "mid-stream" in failure["detail"]
    assert [e["type"] for e in events[:-1]].count("content_block_delta") == 2
    assert plain.status_code == 500
    error(plain.json(), "api_error")


async def test_a_client_that_leaves_stops_the_generation(tmp_path):
    recorder = Recorder()
    body = echo(stream=True, mock={"token_delay_ms": 100})
    async with serve(tmp_path, recorder) as service:
        async with service.stream("POST", "/v1/messages", json=body) as stream:
            seen = b""
            async for chunk in stream:
                seen += chunk
                if b"content_block_delta" in seen:
                    break
    [done] = recorder.done
    assert done.finish_reason == "cancelled" and done.completion_tokens < len(PROMPT.split())
    assert (done.request.surface, done.request.route) == ("messages", "/v1/messages")


async def test_count_tokens_holds_the_model_but_generates_nothing(tmp_path):
    recorder = Recorder()
    async with serve(tmp_path, recorder) as service:
        tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
        plain = await service.client.post(
            "/v1/messages/count_tokens", json={"model": MODEL, "messages": USER}
        )
        with_tools = await service.client.post(
            "/v1/messages/count_tokens", json={"model": MODEL, "messages": USER, "tools": tools}
        )
    assert token_count(with_tools.json()) > token_count(plain.json()) > 0
    assert plain.headers["request-id"]
    assert [(d.finish_reason, d.prompt_tokens, d.completion_tokens) for d in recorder.done] == [
        ("stop", 0, 0),
        ("stop", 0, 0),
    ]
    assert {d.request.route for d in recorder.done} == {"/v1/messages/count_tokens"}
