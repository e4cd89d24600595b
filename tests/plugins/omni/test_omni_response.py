"""The omni upstream's answer → deltas (:mod:`ddx_llm.plugins.omni.response`), from the chunks
mlx-omni-server 0.5.3 streams: content pieces, events cut across body messages, tool calls in
the finish chunk, the usage chunk, ``length`` when the completion reached the limit, the
tokens accounted for, and the upstream's errors as ours."""

from __future__ import annotations

import json

import pytest

from ddx_llm.backend import Delta, ToolCallDelta, Usage
from ddx_llm.errors import LlmError, ModelUnavailable, RequestInvalid
from ddx_llm.plugins.omni.response import StreamReader, upstream_error

FOLDER = "/srv/models/SmolLM2-135M-Instruct"
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]}  # fmt: skip


def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    """A chunk as the upstream serializes it (``exclude_none``: no null fields)."""
    choice = {"index": 0, "delta": {"role": "assistant", **delta}}
    if finish:
        choice["finish_reason"] = finish
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": FOLDER, "choices": [choice], **extra}  # fmt: skip


def event(data: dict | str) -> bytes:
    return b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def read(events: list[bytes], *, limit: int = 100, prompt_tokens: int = 30, cut: int = 0):
    """Feed ``events`` (as one body message each, or cut every ``cut`` bytes) to a reader;
    return every delta, the last one included."""
    reader = StreamReader(prompt_tokens=prompt_tokens, limit=limit)
    deltas = reader.feed(START)
    stream = b"".join(events)
    pieces = [stream[i : i + cut] for i in range(0, len(stream), cut)] if cut else events
    for piece in pieces:
        deltas += reader.feed({"type": "http.response.body", "body": piece, "more_body": True})
    deltas += reader.feed({"type": "http.response.body", "body": b"", "more_body": False})
    return [*deltas, reader.end()]


def answer(*pieces: str, finish: str = "stop", completion: int | None = None) -> list[bytes]:
    count = len(pieces) if completion is None else completion
    return [
        *(event(chunk({"content": p})) for p in pieces),
        event(chunk({}, finish)),
        event(chunk({}, finish, usage=usage(31, count))),
        event("[DONE]"),
    ]


@pytest.mark.parametrize("cut", [0, 1, 7, 37])
def test_content_pieces_then_the_finish_with_our_prompt_count(cut):
    deltas = read(answer("The", " capital", " is"), cut=cut)
    assert deltas == [
        Delta(content="The", tokens=1),
        Delta(content=" capital", tokens=1),
        Delta(content=" is", tokens=1),
        Delta(finish_reason="stop", usage=Usage(30, 3)),  # our 30, not the upstream's 31
    ]


def test_reaching_the_limit_is_length():
    assert read(answer("a", "b", "c"), limit=3)[-1].finish_reason == "length"
    assert read(answer("a", "b"), limit=3)[-1].finish_reason == "stop"


def test_tool_calls_come_whole_in_the_finish_chunk():
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    events = [
        event(chunk({"content": "Let me"})),
        event(chunk({"tool_calls": [call]}, "tool_calls")),
        event(chunk({}, "tool_calls", usage=usage(31, 12))),
        event("[DONE]"),
    ]
    deltas = read(events, limit=12)
    assert deltas[1] == Delta(
        tool_calls=[
            ToolCallDelta(0, id="call_1", name="get_weather", arguments='{"city": "Paris"}')
        ]
    )
    # tokens held back to spot the call are accounted for by the last delta
    assert deltas[-1] == Delta(tokens=11, finish_reason="tool_calls", usage=Usage(30, 12))
    assert sum(d.tokens for d in deltas) == 12


def test_no_token_generated_means_no_usage_chunk_upstream():
    deltas = read([event(chunk({}, "stop")), event("[DONE]")])
    assert deltas == [Delta(finish_reason="stop", usage=Usage(30, 0))]


def test_a_stream_without_a_finish_reason_is_an_error():
    with pytest.raises(LlmError, match="the omni upstream failed") as caught:
        read([event(chunk({"content": "a"})), event("[DONE]")])
    assert caught.value.detail == "its stream ended without a finish reason"


def error_reader(status: int, body: bytes, content_type: bytes) -> StreamReader:
    reader = StreamReader(prompt_tokens=1, limit=1)
    reader.feed({"type": "http.response.start", "status": status,
                 "headers": [(b"content-type", content_type)]})  # fmt: skip
    assert reader.feed({"type": "http.response.body", "body": body}) == []
    return reader


def test_a_fastapi_422_is_request_invalid_naming_the_fields():
    detail = {"detail": [{"type": "string_type", "loc": ["body", "messages", 0, "content"],
                          "msg": "Input should be a valid string", "input": 1}]}  # fmt: skip
    reader = error_reader(422, json.dumps(detail).encode(), b"application/json")
    with pytest.raises(RequestInvalid) as caught:
        reader.end()
    assert caught.value.message == "invalid request: messages.0.content"
    assert caught.value.detail == [{"field": "messages.0.content", "type": "string_type",
                                    "message": "Input should be a valid string"}]  # fmt: skip


def test_upstream_exceptions_become_our_errors():
    reader = error_reader(500, b"Internal Server Error", b"text/plain; charset=utf-8")
    error = reader.error(AttributeError("'str' object has no attribute 'get'"))
    assert (error.status, error.code, error.message) == (
        500,
        "llm_error",
        "the omni upstream failed",
    )
    assert error.detail == "AttributeError: 'str' object has no attribute 'get'"
    for exc in (MemoryError("out"), RuntimeError("Model loading failed for x")):
        unavailable = reader.error(exc)
        assert isinstance(unavailable, ModelUnavailable) and unavailable.status == 503
        assert unavailable.message == "the model cannot serve this request"
    with pytest.raises(LlmError) as caught:
        reader.end()  # an error answer without an exception
    assert caught.value.detail == "HTTP 500: Internal Server Error"
    mid_stream = upstream_error(200, b"", RuntimeError("Stream generation failed: boom"))
    assert mid_stream.detail == "RuntimeError: Stream generation failed: boom"
