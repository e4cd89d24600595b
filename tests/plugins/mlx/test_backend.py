"""The mlx backend on the real bundled SmolLM2, in process (asyncio and trio).

Prompt processing and decoding both run at about 10 tokens/s on this 2-core CPU, so every test
uses a ~21-token prompt and asks for at most a few tokens.
"""

from __future__ import annotations

import time

import anyio
import pytest
from mlx_support import SHORT_CHAT, STORY_CHAT, sse_chunks, wait_ready
from openai_schemas import validate
from support import add_models, running_app, write_conf

from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID

pytestmark = [pytest.mark.anyio, pytest.mark.model]

CHAT = "/v1/chat/completions"


async def test_greedy_answer_with_exact_usage_and_sorted_logprobs(mlx_conf, tokenizer):
    async with running_app(mlx_conf) as (_, client):
        health = await wait_ready(client)
        assert (health["status"], health["model"], health["backend"]) == (
            "ok", BUNDLED_MODEL_ID, "mlx"
        )  # fmt: skip
        response = await client.post(
            CHAT,
            json={
                "messages": SHORT_CHAT,
                "temperature": 0,
                "max_tokens": 12,
                "logprobs": True,
                "top_logprobs": 3,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    prompt = tokenizer.apply_chat_template(SHORT_CHAT, add_generation_prompt=True)
    entries = choice["logprobs"]["content"]
    # completion tokens = the answer's tokens + the end-of-turn token (which has no logprob)
    assert body["usage"] == {
        "prompt_tokens": len(prompt),
        "completion_tokens": len(entries) + 1,
        "total_tokens": len(prompt) + len(entries) + 1,
    }
    assert "".join(bytes(e["bytes"]).decode() for e in entries) == choice["message"]["content"]
    for entry in entries:
        top = entry["top_logprobs"]
        assert len(top) == 3
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        # greedy: the sampled token is the most likely one
        assert (top[0]["token"], top[0]["logprob"]) == (entry["token"], entry["logprob"])
        assert entry["logprob"] <= 0


async def test_streamed_stop_string_across_tokens_is_not_leaked(mlx_conf):
    async with running_app(mlx_conf) as (_, client):
        response = await client.post(
            CHAT,
            json={
                "messages": SHORT_CHAT,
                "temperature": 0,
                "max_tokens": 12,
                "stream": True,
                "stop": [" of Fr"],  # " of" and " France" are separate tokens
                "stream_options": {"include_usage": True},
            },
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(response.text)
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(pieces) == "The capital"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # the stop completed on the 4th generated token ("The", " capital", " of", " France")
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4


async def test_context_window_is_checked_with_the_real_tokenizer(mlx_conf, tokenizer):
    prompt = len(tokenizer.apply_chat_template(SHORT_CHAT, add_generation_prompt=True))
    add_models(
        mlx_conf,
        {
            "id": "tiny-context",
            "family": "smollm2",
            "arch": "llama",
            "total_params_b": 0.135,
            "quantization": "q4_1",
            "context_window": prompt + 3,
            "label": "SmolLM2 with a tiny context window",
            "options": {"bundled": BUNDLED_MODEL_ID},
        },
    )
    write_conf(mlx_conf, {"core": {"default_model": "tiny-context"}})
    async with running_app(mlx_conf) as (_, client):
        too_many = await client.post(CHAT, json={"messages": SHORT_CHAT, "max_tokens": 4})
        long_prompt = [{"role": "user", "content": "Paris " * 40}]
        too_long = await client.post(CHAT, json={"messages": long_prompt})
        fits = await client.post(CHAT, json={"messages": SHORT_CHAT, "temperature": 0})
    assert too_many.status_code == 422
    assert too_many.json()["code"] == "context_too_long"
    assert too_many.json()["detail"] == {
        "prompt_tokens": prompt, "max_tokens": 4, "context_window": prompt + 3,
    }  # fmt: skip
    assert (too_long.status_code, too_long.json()["code"]) == (422, "context_too_long")
    # no max_tokens: the completion gets what is left of the window
    assert fits.status_code == 200
    assert fits.json()["choices"][0]["finish_reason"] == "length"
    assert fits.json()["usage"]["completion_tokens"] == 3


UNSUPPORTED = [
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "strin"}}}},
        "response_format",
    ),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"logit_bias": {"not-a-token": 5}}, "logit_bias.not-a-token.[key]"),  # the schema refuses it
    ({"logit_bias": {"99999999": 5}}, "logit_bias.99999999"),
    ({"logit_bias": {"42": 500}}, "logit_bias.42"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                    ],
                }
            ]
        },
        "messages.0.content.1",
    ),
]


async def test_parameters_the_model_cannot_honour_are_422_naming_the_field(mlx_conf):
    async with running_app(mlx_conf) as (app, client):
        for extra, field in UNSUPPORTED:
            response = await client.post(CHAT, json={"messages": SHORT_CHAT, **extra})
            assert response.status_code == 422, (field, response.text)
            body = response.json()
            assert body["code"] == "request_invalid", body
            assert body["detail"][0]["field"] == field, body
        status = app.context.backend.status(app.context.host.resident_handle)
        assert status["requests_done"] == 0  # nothing was generated


async def test_seed_makes_sampling_reproducible(mlx_conf):
    request = {"messages": SHORT_CHAT, "temperature": 1.5, "seed": 1234, "max_tokens": 3}
    async with running_app(mlx_conf) as (_, client):
        answers = [(await client.post(CHAT, json=request)).json() for _ in range(2)]
    texts = [a["choices"][0]["message"]["content"] for a in answers]
    assert texts[0] == texts[1]
    assert answers[0]["usage"]["completion_tokens"] <= 3


async def test_top_k_one_is_greedy_whatever_the_temperature(mlx_conf):
    """top_k 1 keeps only the most likely token: a hot, unseeded sampler then gives the greedy
    answer, token for token (and min_p 1 does the same)."""
    greedy = {"messages": SHORT_CHAT, "temperature": 0, "max_tokens": 4}
    async with running_app(mlx_conf) as (_, client):
        expected = (await client.post(CHAT, json=greedy)).json()["choices"][0]["message"]
        for narrow in ({"top_k": 1}, {"min_p": 1.0}):
            hot = {**greedy, "temperature": 2.0, **narrow}
            answer = (await client.post(CHAT, json=hot)).json()["choices"][0]["message"]
            assert answer["content"] == expected["content"], narrow


async def test_closing_the_generation_stops_the_worker_within_a_token(mlx_conf):
    from ddx_llm.events import RequestInfo
    from ddx_llm.schemas import ChatCompletionRequest

    async with running_app(mlx_conf) as (app, client):
        await wait_ready(client)
        host, backend = app.context.host, app.context.backend
        request = ChatCompletionRequest(messages=STORY_CHAT, max_tokens=200, temperature=0)
        entry = host.resolve(None)
        request_info = RequestInfo("test", None, "POST", CHAT, "chat.completions")
        async with host.lease(entry, request_info) as lease:
            prompt = await backend.prepare(lease.handle, entry, request)
            deltas = backend.generate(lease.handle, entry, prompt, request)
            first = [await deltas.__anext__() for _ in range(2)]
            assert all(d.tokens == 1 for d in first)
            at_close = backend.status(lease.handle)
            await deltas.aclose()
            closed_at = time.monotonic()
            while backend.status(lease.handle)["busy"]:
                assert time.monotonic() - closed_at < 2, "the worker kept generating"
                await anyio.sleep(0.01)
            generated = backend.status(lease.handle)["tokens_generated"]
            await anyio.sleep(0.5)
            status = backend.status(lease.handle)
    assert at_close["busy"]
    assert status["tokens_generated"] == generated  # nothing generates any more
    # the token being computed when the flag was set, at most one more: never the 200 asked for
    assert generated - at_close["tokens_generated"] <= 2
    assert status["requests_done"] == 1
