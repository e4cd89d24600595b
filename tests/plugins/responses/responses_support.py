"""Helpers of the responses plugin's tests: the OpenAI SDK's own types as the validators of every
body and event, an SSE reader, and an SDK client bound to an in-process app."""

from __future__ import annotations

import json
from typing import Any

from openai import AsyncOpenAI
from openai.types.responses import (
    Response,
    ResponseItem,
    ResponseItemList,
    ResponseStreamEvent,
)
from pydantic import TypeAdapter

MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
EVENT = TypeAdapter(ResponseStreamEvent)
ITEM = TypeAdapter(ResponseItem)
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def echo(input: Any, /, **fields: Any) -> dict[str, Any]:
    """A request body answered by the mock's echo scenario."""
    return {"model": MODEL, "input": input, "mock": {"scenario": "echo"}, **fields}


def valid_response(body: dict[str, Any]) -> Response:
    """``body`` validated as the SDK's ``Response`` (raises on any mismatch)."""
    return Response.model_validate(body)


def valid_item_list(body: dict[str, Any]) -> ResponseItemList:
    for item in body["data"]:
        ITEM.validate_python(item)
    return ResponseItemList.model_validate(body)


def sse_events(text: str) -> list[dict[str, Any]]:
    """The events of a Responses stream, each validated as the SDK's ``ResponseStreamEvent``;
    checks the framing too: ``data: [DONE]`` last, sequence numbers 0, 1, 2 …, created first
    and exactly one terminal event, last."""
    blocks = [block for block in text.split("\n\n") if block.strip()]
    assert blocks[-1] == "data: [DONE]", blocks[-1]
    events = []
    for block in blocks[:-1]:
        assert block.startswith("data: "), block
        event = json.loads(block.removeprefix("data: "))
        EVENT.validate_python(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[1]["type"] == "response.in_progress"
    kinds = [e["type"] for e in events]
    assert sum(kind in TERMINAL for kind in kinds) == 1 and kinds[-1] in TERMINAL, kinds
    valid_response(events[-1]["response"])
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def sdk(client: Any, api_key: str = "not-checked") -> AsyncOpenAI:
    """The official SDK talking to the in-process app through ``client`` (an httpx client
    bound to it)."""
    return AsyncOpenAI(
        base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0
    )
