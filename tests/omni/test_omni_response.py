"""The response side of the omni proxy, message by message: the model id rewritten in JSON and
in SSE events (also when an event is split across body messages), the usage chunk the client
did not ask for dropped, the observation events, and upstream errors held back and mapped."""

from __future__ import annotations

import json
import time

import pytest

from ddx_llm import events, hookimpl
from ddx_llm.errors import RequestInvalid
from ddx_llm.manager import PluginManager
from ddx_llm.plugins.omni.response import ResponseRewriter, upstream_error

pytestmark = pytest.mark.anyio

FOLDER = "/srv/models/SmolLM2-135M-Instruct"


class Recorder:
    def __init__(self) -> None:
        self.events: list[events.Event] = []

    @hookimpl
    def ddx_llm_observe(self, event: events.Event) -> None:
        self.events.append(event)


def rewriter_with(sent: list, **options) -> tuple[ResponseRewriter, Recorder]:
    pm, recorder = PluginManager(), Recorder()
    pm.register(recorder)

    async def send(message: dict) -> None:
        sent.append(message)

    options.setdefault("client_wants_usage", False)
    return ResponseRewriter(send, "smol", pm.hook, time.monotonic(), **options), recorder


def event(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    choice = {"index": 0, "delta": delta, **({"finish_reason": finish} if finish else {})}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": FOLDER, "choices": [choice], **extra}  # fmt: skip


async def test_stream_events_are_rewritten_across_message_boundaries():
    sent: list = []
    rewriter, recorder = rewriter_with(sent)
    usage = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
    stream = (
        event(chunk({"role": "assistant", "content": "Hi"}))
        + event(chunk({"role": "assistant", "content": " there"}))
        + event(chunk({"role": "assistant"}, "stop"))
        + event(chunk({"role": "assistant"}, "stop", usage=usage))
        + b"data: [DONE]\n\n"
    )
    await rewriter.send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"connection", b"keep-alive"),
            ],
        }
    )
    for start in range(0, len(stream), 37):  # cut anywhere, mid-event included
        piece = stream[start : start + 37]
        more = start + 37 < len(stream)
        await rewriter.send({"type": "http.response.body", "body": piece, "more_body": more})

    headers = dict(sent[0]["headers"])
    assert b"connection" not in headers and headers[b"x-accel-buffering"] == b"no"
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert sent[-1]["more_body"] is False
    events_out = [e for e in body.decode().split("\n\n") if e]
    assert events_out[-1] == "data: [DONE]" and len(events_out) == 4  # usage chunk dropped
    chunks = [json.loads(e[6:]) for e in events_out[:-1]]
    assert all(c["model"] == "smol" for c in chunks)
    assert FOLDER not in body.decode()
    assert (rewriter.finish_reason, rewriter.usage, rewriter.complete) == ("stop", usage, True)
    kinds = [type(e).__name__ for e in recorder.events]
    assert kinds == ["FirstToken", "TokensGenerated"]
    done = rewriter.done_event("stop")
    assert (done.prompt_tokens, done.completion_tokens) == (30, 2)


async def test_json_answer_gets_the_model_id_and_a_fresh_content_length():
    sent: list = []
    rewriter, _ = rewriter_with(sent)
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": FOLDER,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}  # fmt: skip
    raw = json.dumps(answer, separators=(",", ":")).encode()
    await rewriter.send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
        }
    )
    assert sent == []  # held until the body is known
    await rewriter.send({"type": "http.response.body", "body": raw, "more_body": False})
    body = json.loads(sent[1]["body"])
    assert body == {**answer, "model": "smol"}
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()
    assert rewriter.finish_reason == "stop" and rewriter.done_event("stop").completion_tokens == 1


async def test_upstream_errors_are_held_back_and_mapped():
    sent: list = []
    rewriter, _ = rewriter_with(sent)
    detail = {"detail": [{"type": "string_type", "loc": ["body", "messages", 0, "content"],
                          "msg": "Input should be a valid string", "input": 1}]}  # fmt: skip
    await rewriter.send({"type": "http.response.start", "status": 422,
                         "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await rewriter.send({"type": "http.response.body", "body": json.dumps(detail).encode()})
    assert sent == [] and rewriter.mode == "error"
    error = upstream_error(rewriter, None)
    assert isinstance(error, RequestInvalid) and error.status == 422
    assert error.detail == [{"field": "messages.0.content", "type": "string_type",
                             "message": "Input should be a valid string"}]  # fmt: skip

    crashed, _ = rewriter_with([])
    await crashed.send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})  # fmt: skip
    await crashed.send({"type": "http.response.body", "body": b"Internal Server Error"})
    error = upstream_error(crashed, AttributeError("'str' object has no attribute 'get'"))
    assert (error.status, error.code) == (500, "llm_error")
    assert error.detail == "AttributeError: 'str' object has no attribute 'get'"
    unavailable = upstream_error(crashed, RuntimeError("Model loading failed for x"))
    assert (unavailable.status, unavailable.code) == (503, "model_unavailable")
