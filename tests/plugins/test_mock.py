"""The mock backend's reasoning scenario: thinking apart from the answer, as reasoning models
answer, so clients can test their handling without a model."""

from __future__ import annotations

import json

import pytest
from openai_schemas import validate
from support import running_app

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
BODY = {
    "messages": [{"role": "user", "content": "hello there"}],
    "mock": {"scenario": "reasoning"},
}


async def test_reasoning_comes_apart_from_the_answer(conf_dir):
    async with running_app(conf_dir) as (_, client):
        plain = (await client.post(CHAT, json=BODY)).json()
        streamed = await client.post(CHAT, json={**BODY, "stream": True})
    validate("CreateChatCompletionResponse", plain)
    message = plain["choices"][0]["message"]
    assert message["content"] == "hello there"
    assert message["reasoning_content"] == message["reasoning"] == "Thinking about: hello there"
    assert plain["usage"]["completion_tokens"] == 6  # four words of thought, two of answer
    chunks = [
        json.loads(line.removeprefix("data: "))
        for line in streamed.text.splitlines()
        if line.startswith("data: {")
    ]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    thinking = "".join(d.get("reasoning_content", "") for d in deltas)
    answer = "".join(d.get("content", "") for d in deltas)
    assert (thinking, answer) == ("Thinking about: hello there", "hello there")
    first_answer = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all("reasoning_content" not in d for d in deltas[first_answer:])  # thinking first


async def test_the_limit_counts_the_thinking(conf_dir):
    async with running_app(conf_dir) as (_, client):
        cut = (await client.post(CHAT, json={**BODY, "max_tokens": 2})).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["choices"][0]["message"]["reasoning_content"] == "Thinking about:"
    assert cut["usage"]["completion_tokens"] == 2
