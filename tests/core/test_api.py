"""The HTTP contract on the mock backend, in process (asyncio and trio)."""

from __future__ import annotations

import json

import pytest
from openai_schemas import validate
from support import documented, running_app, write_conf

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "What is the weather in Berlin?"}]
JSON = {"content-type": "application/json"}


@pytest.fixture
async def client(conf_dir):
    async with running_app(conf_dir) as (_, client):
        yield client


def sse_events(text: str) -> list[str]:
    """The data payloads of an SSE body, in order."""
    assert text.endswith("\n\n")
    return [block.removeprefix("data: ") for block in text.strip().split("\n\n")]


async def test_health_and_readiness(client):
    for path in ("/health", "/healthz"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "model": "mlx-community/Qwen3-4B-Instruct-2507-4bit",
            "model_state": "ready",
            "model_load_elapsed_ms": response.json()["model_load_elapsed_ms"],
            "backend": "mock",
            "requests": {"running": 0, "waiting": 0},
        }
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "reasons": []})


async def test_models_list_matches_openai_schema_with_registry_extras(client):
    body = (await client.get("/v1/models")).json()
    validate("ListModelsResponse", body)
    qwen = next(m for m in body["data"] if m["id"] == "mlx-community/Qwen3-4B-Instruct-2507-4bit")
    for extra in (
        "family",
        "arch",
        "total_params_b",
        "quantization",
        "context_window",
        "multimodal",
        "label",
    ):
        assert extra in qwen
    assert qwen["owned_by"] == "mlx-community"
    assert "path" not in qwen and "options" not in qwen


async def test_current_model_and_load_outside_real_mode(client):
    current = (await client.get("/v1/models/current")).json()
    assert current["model_id"] == "mlx-community/Qwen3-4B-Instruct-2507-4bit"
    assert current["loaded"] is True
    response = await client.post("/v1/models/load", json={"model_id": current["model_id"]})
    assert response.status_code == 404
    assert documented(response.json()) == {
        "code": "model_not_found",
        "message": "model loading is not available",
        "detail": "server not in real-model mode",
    }


async def test_default_answer_is_the_canned_tool_call(client):
    response = await client.post(
        CHAT, json={"messages": USER, "model": "mlx-community/Qwen3-4B-Instruct-2507-4bit"}
    )
    assert response.status_code == 200
    body = response.json()
    validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["logprobs"] is None
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": "call_0", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Berlin"}'}}
        ],
    }  # fmt: skip
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_streamed_tool_call_deltas_and_usage_chunk(client):
    response = await client.post(
        CHAT, json={"messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    payloads = sse_events(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert len({c["id"] for c in chunks}) == 1
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant"
    assert first["tool_calls"][0] == {
        "index": 0, "id": "call_0", "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }  # fmt: skip
    arguments = "".join(
        call["function"].get("arguments", "")
        for c in chunks if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    )  # fmt: skip
    assert arguments == '{"city":"Berlin"}'
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


async def test_echo_scenario_streams_the_last_user_message(client):
    request = {
        "messages": [{"role": "user", "content": "one two three"}],
        "stream": True,
        "mock": {"scenario": "echo"},
    }
    payloads = sse_events((await client.post(CHAT, json=request)).text)
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "one two three"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_echo_honours_max_tokens_and_stop(client):
    base = {
        "messages": [{"role": "user", "content": "alpha beta gamma delta"}],
        "mock": {"scenario": "echo"},
    }
    limited = (await client.post(CHAT, json={**base, "max_tokens": 2})).json()
    assert limited["choices"][0]["message"]["content"] == "alpha beta"
    assert limited["choices"][0]["finish_reason"] == "length"
    assert limited["usage"]["completion_tokens"] == 2
    stopped = (await client.post(CHAT, json={**base, "stop": ["gam"]})).json()
    assert stopped["choices"][0]["message"]["content"] == "alpha beta "
    assert stopped["choices"][0]["finish_reason"] == "stop"


async def test_default_scenario_is_configurable(conf_dir):
    write_conf(conf_dir, {"mock": {"scenario": "echo"}})
    async with running_app(conf_dir) as (_, client):
        body = (
            await client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
        ).json()
    assert body["choices"][0]["message"]["content"] == "hi"


async def test_error_scenario_fails_in_band_mid_stream(client):
    request = {
        "messages": [{"role": "user", "content": "a b c d"}],
        "stream": True,
        "mock": {"scenario": "error"},
    }
    payloads = sse_events((await client.post(CHAT, json=request)).text)
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert error["code"] == "llm_error" and "mock failure" in error["message"]
    plain = await client.post(CHAT, json={**request, "stream": False})
    assert plain.status_code == 500
    assert plain.json()["code"] == "llm_error"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": USER, "temperature": "hot"}, "temperature"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "n": 2}, "n"),
        ({"messages": USER, "top_k": -1}, "top_k"),
        ({"messages": USER, "top_k": "40"}, "top_k"),
        ({"messages": USER, "min_p": 1.5}, "min_p"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": USER, "mock": {"scenario": "dance"}}, "scenario"),
    ],
)
async def test_invalid_requests_get_422_naming_the_field(client, body, field):
    response = await client.post(CHAT, json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "request_invalid"
    assert any(item["field"].endswith(field) for item in error["detail"]), error


async def test_unknown_fields_are_ignored(client):
    response = await client.post(
        CHAT, json={"messages": USER, "frobnicate": True, "metadata": {"a": 1}}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"])
async def test_malformed_bodies_get_422(client, raw):
    response = await client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["code"] == "request_invalid"


async def test_unknown_model_is_404(client):
    response = await client.post(CHAT, json={"messages": USER, "model": "gpt-17"})
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"


async def test_context_window_counts_requested_completion_tokens(conf_dir):
    write_conf(conf_dir, {"core": {"max_body_bytes": 4_000_000}})
    async with running_app(conf_dir) as (_, client):
        prompt = "x" * 400_000  # 100k estimated tokens
        fits = await client.post(CHAT, json={"messages": [{"role": "user", "content": prompt}]})
        assert fits.status_code == 200
        over = await client.post(
            CHAT, json={"messages": [{"role": "user", "content": prompt}], "max_tokens": 200_000}
        )
    assert over.status_code == 422
    error = over.json()
    assert error["code"] == "context_too_long"
    assert error["detail"]["context_window"] == 262144
    assert error["detail"]["max_tokens"] == 200_000


async def test_body_over_the_limit_is_413(conf_dir):
    write_conf(conf_dir, {"core": {"max_body_bytes": 1000}})
    async with running_app(conf_dir) as (_, client):
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        response = await client.post(CHAT, json=big)
        assert response.status_code == 413
        assert response.json()["code"] == "request_too_large"

        async def chunked():  # no Content-Length: the limit counts received bytes
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"y" * 100
            yield b'"}]}'

        streamed = await client.post(CHAT, content=chunked(), headers=JSON)
        assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("POST", "/v1/completions", 404, "not_found"),
        ("POST", "/v1/embeddings", 404, "not_found"),
        ("POST", "/v1/audio/speech", 404, "not_found"),
        ("POST", "/v1/images/generations", 404, "not_found"),
        ("GET", CHAT, 405, "method_not_allowed"),
        ("DELETE", "/v1/models", 405, "method_not_allowed"),
    ],
)
async def test_routing_misses_use_the_error_shape(client, method, path, status, code):
    response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code
    assert set(documented(response.json())) <= {"code", "message", "detail"}
    if status == 405:
        assert "allow" in response.headers


async def test_echo_logprobs_are_certain_and_schema_valid(client):
    request = {
        "messages": [{"role": "user", "content": "sure thing"}],
        "mock": {"scenario": "echo"},
        "logprobs": True,
        "top_logprobs": 2,
    }
    body = (await client.post(CHAT, json=request)).json()
    validate("CreateChatCompletionResponse", body)
    content = body["choices"][0]["logprobs"]["content"]
    assert [item["token"] for item in content] == ["sure", " thing"]
    assert all(
        item["logprob"] == 0.0 and item["top_logprobs"][0]["logprob"] == 0.0 for item in content
    )
    assert content[1]["bytes"] == list(b" thing")
    chunks = [
        json.loads(p)
        for p in sse_events((await client.post(CHAT, json={**request, "stream": True})).text)[:-1]
    ]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["logprobs"]["content"][0]["token"] == "sure"
