"""``POST /v1/completions`` in process (asyncio and trio) on the mock: off by default, OpenAI's
shapes (validated against OpenAI's published schemas), streaming, echo, logprobs, usage, the
refusals, lifecycle events and auth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from completions_schemas import errors, validate
from support import running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.events import Event, RequestDone

pytestmark = pytest.mark.anyio

PATH = "/v1/completions"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
PROMPT = (
    "Once upon a time there was a small service that spoke many APIs and answered every "
    "client that asked it anything at all"
)
ECHO = {"scenario": "echo"}


def enable(conf_dir, **completions: Any) -> None:
    write_conf(conf_dir, {"completions": {"enabled": True, **completions}, "mock": ECHO})


class Recorder:
    """A plugin keeping every lifecycle event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def ddx_llm_observe(self, event: Event) -> None:
        self.events.append(event)


def validate_chunk(chunk: dict[str, Any]) -> None:
    """Validate a streamed chunk against ``CreateCompletionResponse``.  The one deviation:
    ``finish_reason`` is null until the last chunk — what OpenAI's API (and vLLM) sends,
    although the published schema, shared by chunks and whole completions, says string."""
    choices = [
        {**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk.get("choices", [])
    ]
    validate("CreateCompletionResponse", {**chunk, "choices": choices})


def events_of(text: str) -> list[Any]:
    """The ``data:`` payloads of an event stream, JSON decoded but for ``[DONE]``."""
    payloads = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


@pytest.fixture
async def client(conf_dir):
    enable(conf_dir)
    async with running_app(conf_dir) as (_, client):
        yield client


async def test_off_in_the_shipped_conf(conf_dir):
    async with running_app(conf_dir) as (_, client):
        response = await client.post(PATH, json={"model": MODEL, "prompt": "hi"})
        document = (await client.get("/openapi.json")).json()
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert PATH not in document["paths"]


async def test_completion_is_openais_text_completion(client):
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 5, "temperature": 0}
    assert errors("CreateCompletionRequest", body) == []
    response = await client.post(PATH, json=body)
    assert response.status_code == 200, response.text
    completion = response.json()
    validate("CreateCompletionResponse", completion)
    assert completion["object"] == "text_completion"
    assert completion["id"].startswith("cmpl-")
    assert completion["model"] == MODEL
    (choice,) = completion["choices"]
    # the mock continues the prompt by echoing it word by word: 5 tokens asked, 5 words given
    assert choice == {
        "index": 0,
        "text": "Once upon a time there",
        "logprobs": None,
        "finish_reason": "length",
    }
    usage = completion["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5


async def test_max_tokens_defaults_to_16_as_at_openai(client):
    response = await client.post(PATH, json={"model": MODEL, "prompt": PROMPT})
    (choice,) = response.json()["choices"]
    assert len(choice["text"].split()) == 16 and choice["finish_reason"] == "length"
    short = await client.post(PATH, json={"model": MODEL, "prompt": "two words"})
    assert short.json()["choices"][0] == {
        "index": 0, "text": "two words", "logprobs": None, "finish_reason": "stop"
    }  # fmt: skip


async def test_stream_chunks_have_the_completion_shape_and_end_with_usage(client):
    body = {
        "model": MODEL,
        "prompt": [PROMPT],  # a list of one prompt is one prompt
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert errors("CreateCompletionRequest", body) == []
    response = await client.post(PATH, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, done = events_of(response.text)
    assert done == "[DONE]"
    for chunk in chunks:
        validate_chunk(chunk)
    assert len({chunk["id"] for chunk in chunks}) == 1
    texts = [chunk["choices"][0]["text"] for chunk in chunks[:-2]]
    assert "".join(texts) == "Once upon a time"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 4 + ["length"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 4
    assert all("usage" not in chunk for chunk in chunks[:-1])


async def test_echo_puts_the_prompt_first(client):
    body = {"model": MODEL, "prompt": "echo me", "echo": True}
    whole = (await client.post(PATH, json=body)).json()
    validate("CreateCompletionResponse", whole)
    assert whole["choices"][0]["text"] == "echo meecho me"
    streamed = events_of((await client.post(PATH, json={**body, "stream": True})).text)
    for chunk in streamed[:-1]:
        validate_chunk(chunk)
    assert streamed[0]["choices"][0]["text"] == "echo me"
    assert "".join(c["choices"][0]["text"] for c in streamed[:-1]) == "echo meecho me"


async def test_logprobs_in_the_legacy_shape(client):
    body = {"model": MODEL, "prompt": "alpha beta gamma", "logprobs": 2}
    completion = (await client.post(PATH, json=body)).json()
    validate("CreateCompletionResponse", completion)
    assert completion["choices"][0]["logprobs"] == {
        "tokens": ["alpha", " beta", " gamma"],
        "token_logprobs": [0.0, 0.0, 0.0],
        "top_logprobs": [{"alpha": 0.0}, {" beta": 0.0}, {" gamma": 0.0}],
        "text_offset": [0, 5, 10],
    }
    streamed = events_of((await client.post(PATH, json={**body, "stream": True})).text)
    offsets = [o for c in streamed[:-2] for o in c["choices"][0]["logprobs"]["text_offset"]]
    assert offsets == [0, 5, 10]  # offsets count across chunks


async def test_stop_and_seed_go_through(client):
    body = {"model": MODEL, "prompt": "one two three four", "stop": " three", "seed": 7}
    completion = (await client.post(PATH, json=body)).json()
    assert completion["choices"][0]["text"] == "one two"
    assert completion["choices"][0]["finish_reason"] == "stop"


REFUSED = [
    ({"prompt": "a", "n": 2}, "n"),
    ({"prompt": "a", "best_of": 3}, "best_of"),
    ({"prompt": "a", "suffix": "end"}, "suffix"),
    ({"prompt": "a", "echo": True, "logprobs": 1}, "echo"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": [[1, 2], [3]]}, "prompt"),
    ({"prompt": ["first", "second"]}, "prompt"),
]


@pytest.mark.parametrize(("body", "field"), REFUSED)
async def test_what_cannot_be_honoured_is_refused_naming_the_field(client, body, field):
    body = {"model": MODEL, **body}
    assert errors("CreateCompletionRequest", body) == [], "valid for OpenAI: refused by us"
    response = await client.post(PATH, json=body)
    assert response.status_code == 422
    answer = response.json()
    assert answer["code"] == "request_invalid"
    assert answer["message"].startswith(f"{field}: ")
    assert answer["detail"][0]["field"] == field


WRONG_TYPES = [
    {"prompt": 5},
    {"prompt": "a", "max_tokens": "10"},
    {"prompt": "a", "max_tokens": -1},
    {"prompt": "a", "temperature": 3},
    {"prompt": "a", "temperature": "0.5"},
    {"prompt": "a", "stream": "yes"},
    {"prompt": "a", "logprobs": 6},
    {"prompt": "a", "echo": 1},
    {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]},
    {"prompt": "a", "n": 0},
    {"prompt": "a", "best_of": 21},
    {"prompt": "a", "frequency_penalty": 2.5},
    {"prompt": "a", "seed": "1"},
    {"prompt": "a", "model": 3},
]


@pytest.mark.parametrize("body", WRONG_TYPES)
async def test_what_openais_schema_refuses_is_refused(client, body):
    body = {"model": MODEL, **body}
    assert errors("CreateCompletionRequest", body), "invalid for OpenAI"
    response = await client.post(PATH, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "request_invalid"


async def test_a_null_prompt_is_refused(client):
    body = {"model": MODEL, "prompt": None}
    assert errors("CreateCompletionRequest", body) == [], "OpenAI's schema allows null"
    response = await client.post(PATH, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"].startswith("prompt")


async def test_a_chat_field_sent_here_is_not_a_prompt(client):
    body = {"model": MODEL, "prompt": "the prompt", "messages": [{"role": "user", "content": "x"}]}
    completion = (await client.post(PATH, json=body)).json()
    assert completion["choices"][0]["text"] == "the prompt"


async def test_a_tool_call_or_reasoning_is_no_text_completion(client):
    for scenario, what in (("tool_call", "a tool call"), ("reasoning", "reasoning")):
        body = {"model": MODEL, "prompt": "a b c", "mock": {"scenario": scenario}}
        response = await client.post(PATH, json=body)
        assert response.status_code == 422
        assert f"answered with {what}" in response.json()["message"]
        streamed = await client.post(PATH, json={**body, "stream": True})
        *_, error, done = events_of(streamed.text)
        assert error["error"]["code"] == "request_invalid" and done == "[DONE]"


async def test_one_request_one_lifecycle_on_surface_completions(conf_dir):
    enable(conf_dir)
    recorder = Recorder()
    async with running_app(conf_dir, extra_plugins=(("recorder", recorder),)) as (_, client):
        await client.post(PATH, json={"model": MODEL, "prompt": "x y", "max_tokens": 1})
        metrics = (await client.get("/metrics")).text
    done = [e for e in recorder.events if isinstance(e, RequestDone)]
    assert len(done) == 1
    assert done[0].request.surface == "completions"
    assert done[0].request.route == PATH
    assert (done[0].finish_reason, done[0].completion_tokens) == ("length", 1)
    assert 'ddx_llm_requests_total{method="POST",route="/v1/completions",status="200"} 1.0' in (
        metrics
    )


async def test_needs_a_key_when_auth_is_on(conf_dir, monkeypatch):
    enable(conf_dir)
    monkeypatch.setenv("DDX_LLM_API_KEYS", "k1")
    async with running_app(conf_dir) as (_, client):
        refused = await client.post(PATH, json={"model": MODEL, "prompt": "x"})
        served = await client.post(
            PATH, json={"model": MODEL, "prompt": "x"}, headers={"authorization": "Bearer k1"}
        )
        document = (await client.get("/openapi.json")).json()
    assert refused.status_code == 401 and served.status_code == 200
    operation = document["paths"][PATH]["post"]
    assert operation["security"] and "401" in operation["responses"]


async def test_the_openapi_document_stays_valid_and_describes_the_route(client):
    from openapi_spec_validator import validate as validate_openapi

    document = (await client.get("/openapi.json")).json()
    validate_openapi(document)
    operation = document["paths"][PATH]["post"]
    body_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = document["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert {"prompt", "max_tokens", "echo", "logprobs", "stream"} <= set(request["properties"])
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    for status in ("415", "422", "503"):  # the core adds the body errors, the plugin the rest
        assert status in operation["responses"], status
