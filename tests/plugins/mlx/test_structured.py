"""Structured output and forced tool calls on the real bundled SmolLM2, in process (asyncio and
trio), greedy and sampled, streamed and not, alone and batched with a free request.

Prompt processing and decoding both run at about 10 tokens/s on this 2-core CPU (slower in a
batch): the answers are kept to a few dozen tokens by bounded schemas, and the tool-call tests
share one tools prompt so the second request reuses the first one's prompt cache.
"""

from __future__ import annotations

import json

import anyio
import jsonschema
import pytest
from mlx_support import SHORT_CHAT, STORY_CHAT, sse_chunks, wait_ready
from openai_schemas import validate
from structured_support import BAD_SCHEMAS, PARAMETERS, SCHEMAS, TOOLS, json_format
from support import running_app, write_conf

from ddx_llm.plugins.mlx_models.bundled import TOOLS_MODEL_ID

pytestmark = [pytest.mark.anyio, pytest.mark.model]

CHAT = "/v1/chat/completions"
ASK_JSON = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "The capital of France, as JSON."},
]
WEATHER_CHAT = [{"role": "system", "content": ""}, {"role": "user", "content": "Weather in Paris?"}]


async def answer(client, body: dict) -> tuple[str, str]:
    """``(content, finish_reason)`` of one completion, streamed or not (checked against
    OpenAI's schemas either way)."""
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    if not body.get("stream"):
        validate("CreateChatCompletionResponse", response.json())
        choice = response.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    chunks = sse_chunks(response.text)
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return text, next(c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and
                      c["choices"][0]["finish_reason"])  # fmt: skip


async def batch(client, bodies: list[dict]) -> list[tuple[str, str]]:
    """The answers to ``bodies`` sent at once (they share the worker's batch)."""
    results: list = [None] * len(bodies)

    async def one(index: int) -> None:
        results[index] = await answer(client, bodies[index])

    async with anyio.create_task_group() as tg:
        for index in range(len(bodies)):
            tg.start_soon(one, index)
    return results


def schema_request(name: str, **fields) -> dict:
    strict = name != "bounds_and_pattern"  # strict false is enforced all the same
    return {"messages": ASK_JSON, "max_tokens": 60, "response_format": json_format(
        SCHEMAS[name], strict=strict), **fields}  # fmt: skip


def check(name: str, text: str, finish: str) -> None:
    assert finish == "stop", (name, text)
    jsonschema.validate(json.loads(text), SCHEMAS[name])


async def test_greedy_answers_validate_alone_and_batched_with_a_free_request(mlx_conf):
    async with running_app(mlx_conf) as (_, client):
        await wait_ready(client)
        alone = {name: await answer(client, schema_request(name, temperature=0))
                 for name in SCHEMAS}  # fmt: skip
        free = {"messages": SHORT_CHAT, "temperature": 0, "max_tokens": 8}
        free_alone = await answer(client, free)
        *batched, free_answer = await batch(
            client, [schema_request(name, temperature=0) for name in SCHEMAS] + [free]
        )
        health = (await client.get("/health")).json()["mlx"]
    for name, (text, finish) in alone.items():
        check(name, text, finish)
    # greedy: the same answer whether alone or sharing the batch with others
    assert dict(zip(SCHEMAS, batched, strict=True)) == alone
    assert free_answer == free_alone  # its constrained neighbours left it alone
    structured = health["structured"]
    assert structured["sequences_done"] == 2 * len(SCHEMAS)
    assert structured["grammar_states"] == 0
    assert structured["grammars_compiled"] == len(SCHEMAS)  # then served from the cache
    assert structured["grammar_cache_hits"] == len(SCHEMAS)


async def test_sampled_streamed_answers_validate_in_a_batch(mlx_conf):
    bodies = [schema_request(name, temperature=1.0, seed=7 + i, stream=True)
              for i, name in enumerate(SCHEMAS)]  # fmt: skip
    json_object = {"messages": ASK_JSON, "temperature": 0.8, "seed": 3, "max_tokens": 40,
                   "response_format": {"type": "json_object"}, "stream": True}  # fmt: skip
    free = {"messages": SHORT_CHAT, "temperature": 0.8, "max_tokens": 6, "stream": True}
    async with running_app(mlx_conf) as (_, client):
        *answers, (anything, finish), _ = await batch(client, [*bodies, json_object, free])
    for name, (text, finish_reason) in zip(SCHEMAS, answers, strict=True):
        check(name, text, finish_reason)
    assert finish == "stop" and isinstance(json.loads(anything), dict), anything


async def test_bad_schemas_are_422_and_max_tokens_inside_the_json_is_length(mlx_conf):
    async with running_app(mlx_conf) as (app, client):
        for schema, reason in BAD_SCHEMAS:
            body = {"messages": SHORT_CHAT, "response_format": json_format(schema)}
            response = await client.post(CHAT, json=body)
            assert response.status_code == 422, response.text
            error = response.json()
            assert error["code"] == "request_invalid"
            assert error["detail"][0]["field"] == "response_format"
            assert reason in error["message"]
        assert app.context.backend.status(app.context.host.resident_handle)["requests_done"] == 0
        for stream in (False, True):
            body = schema_request("defs_ref_anyof_items", temperature=0, max_tokens=3)
            text, finish = await answer(client, {**body, "stream": stream})
            assert finish == "length"  # documented: the text is then incomplete JSON
            assert text.startswith("{") and len(text) > 1
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)


async def test_forced_tool_calls_validate_against_their_parameters(mlx_conf):
    write_conf(mlx_conf, {"core": {"default_model": TOOLS_MODEL_ID}})
    named = {"messages": WEATHER_CHAT, "tools": TOOLS, "temperature": 0, "max_tokens": 40,
             "tool_choice": {"type": "function", "function": {"name": "get_time"}}}  # fmt: skip
    required = {**named, "tool_choice": "required", "temperature": 0.7, "seed": 11, "stream": True}
    async with running_app(mlx_conf) as (_, client):
        await wait_ready(client)
        response = await client.post(CHAT, json=named)
        streamed = await client.post(CHAT, json=required)
        health = (await client.get("/health")).json()["mlx"]
    assert response.status_code == 200, response.text
    validate("CreateChatCompletionResponse", response.json())
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMETERS["get_time"])
    chunks = sse_chunks(streamed.text)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    pieces = [piece for delta in deltas for piece in delta.get("tool_calls") or []]
    name = pieces[0]["function"]["name"]
    arguments = "".join(piece["function"].get("arguments") or "" for piece in pieces)
    jsonschema.validate(json.loads(arguments), PARAMETERS[name])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert health["structured"]["tool_parser"] == "json_tools"
    assert health["prompt_cache"]["hits"] >= 1  # the second call reused the tools prompt


async def test_a_client_that_leaves_frees_its_grammar_state(mlx_conf):
    from ddx_llm.events import RequestInfo
    from ddx_llm.schemas import ChatCompletionRequest

    schema = {"type": "object", "properties": {"story": {"type": "string", "minLength": 500}},
              "required": ["story"]}  # fmt: skip
    request = ChatCompletionRequest(
        messages=STORY_CHAT, max_tokens=200, temperature=0, response_format=json_format(schema)
    )
    async with running_app(mlx_conf) as (app, client):
        await wait_ready(client)
        host, backend = app.context.host, app.context.backend
        entry = host.resolve(None)
        info = RequestInfo("test", None, "POST", CHAT, "chat.completions")
        async with host.lease(entry, info) as lease:
            prompt = await backend.prepare(lease.handle, entry, request)
            deltas = backend.generate(lease.handle, entry, prompt, request)
            first = [(await deltas.__anext__()).content or "" for _ in range(3)]
            during = backend.status(lease.handle)["structured"]
            await deltas.aclose()
            with anyio.fail_after(5):
                while backend.status(lease.handle)["busy"]:
                    await anyio.sleep(0.01)
            after = backend.status(lease.handle)["structured"]
    assert "".join(first).startswith('{"story"')
    assert during["grammar_states"] == 1
    assert after["grammar_states"] == 0  # dropped with the sequence, not kept
