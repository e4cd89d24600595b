"""Helpers for the Messages surface's tests: read Anthropic SSE, and validate every body and
event against the ``anthropic`` SDK's own types (no field they do not know, every field they
require)."""

from __future__ import annotations

import json
from typing import Any

from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import BaseModel, TypeAdapter

MESSAGE = TypeAdapter(Message)
EVENT = TypeAdapter(RawMessageStreamEvent)
COUNT = TypeAdapter(MessageTokensCount)
ERROR = TypeAdapter(ErrorResponse)
OURS = {"code", "message", "detail"}
"""The service's own error fields, beside Anthropic's."""


def no_unknown_fields(value: Any, where: str = "body") -> None:
    """Fail when an SDK model kept a field it does not define (the SDK's models accept any)."""
    if isinstance(value, BaseModel):
        extra = value.model_extra or {}
        assert not extra, f"{where}: fields the SDK does not know: {sorted(extra)}"
        for name in type(value).model_fields:
            no_unknown_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            no_unknown_fields(item, f"{where}.{index}")


def message(body: dict[str, Any]) -> Message:
    """A non-streamed answer, validated."""
    parsed = MESSAGE.validate_python(body)
    no_unknown_fields(parsed)
    return parsed


def token_count(body: dict[str, Any]) -> int:
    parsed = COUNT.validate_python(body)
    no_unknown_fields(parsed)
    return parsed.input_tokens


def error(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """An error body, validated: Anthropic's fields of type ``kind`` plus ours, which must
    repeat its message.  ``request_too_large`` (Anthropic's documented type for 413) is missing
    from the SDK's ``ErrorObject`` union (the SDK picks its exception class by status), so that
    one is checked field by field."""
    if kind == "request_too_large":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        assert body["error"]["type"] == kind and isinstance(body["error"]["message"], str)
        assert set(body) <= {"type", "error", "request_id", *OURS}, body
        assert body["message"] == body["error"]["message"] and body["request_id"], body
        return body
    parsed = ERROR.validate_python(body)
    assert parsed.type == "error" and parsed.error.type == kind, body
    assert set(parsed.model_extra or {}) <= OURS, body
    assert body["message"] == parsed.error.message and body["code"], body
    assert body["request_id"], body
    return body


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of each event; the name must be the data's ``type``."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) == {"event", "data"}, block
        data = json.loads(fields["data"])
        assert data["type"] == fields["event"], block
        events.append((fields["event"], data))
    return events


def stream_events(text: str) -> list[dict[str, Any]]:
    """The events of a whole stream, pings left out, each validated as a
    ``RawMessageStreamEvent``; the stream must start with message_start and end with
    message_stop (or an error event)."""
    events = [data for name, data in sse(text) if name != "ping"]
    for data in events:
        if data["type"] == "error":
            ERROR.validate_python(data)
            continue
        no_unknown_fields(EVENT.validate_python(data), data["type"])
    assert events[0]["type"] == "message_start", events[0]
    assert events[-1]["type"] in ("message_stop", "error"), events[-1]
    return events


def text_of(answer: Message) -> str:
    return "".join(block.text for block in answer.content if block.type == "text")
