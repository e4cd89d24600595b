"""The Responses surface under a real Hypercorn (asyncio and trio workers), mock backend, with an
API key: the official OpenAI Python SDK's ``client.responses`` (create, stream, a tools round
trip, previous_response_id, retrieve, delete, input_items), the Vercel AI SDK 6 in Node 20
(``openai.chat(...)`` and ``openai.responses(...)``: generateText, streamText, tool round
trips; tests/clients/ai_sdk_openai.mjs), and two replicas sharing conversations through a real
Redis.

Every body and every event is validated with the OpenAI SDK's own types (``Response``,
``ResponseStreamEvent``, ``ResponseItemList``; ``ChatCompletion``, ``ChatCompletionChunk`` for
the AI SDK's chat calls); the SDK's streaming helper checks the order of events strictly.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import AuthenticationError, NotFoundError, OpenAI, UnprocessableEntityError
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
from pydantic import TypeAdapter
from support import ROOT, LiveServer, copy_project_conf, write_conf
from test_seed_clients import node  # noqa: F401 (fixture: node with the pinned packages)
from tools.redis_server import redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.live

KEY = "sk-responses-live-0123456789abcdef"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
PROMPT = "What is the weather in Berlin?"
ECHO = {"mock": {"scenario": "echo"}}
EVENT = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def start(conf_dir, worker: str, **env: str) -> LiveServer:
    live = LiveServer(conf_dir, args=("-k", worker), env={"DDX_LLM_API_KEYS": KEY, **env})
    # module-scoped: leave the outer environment's DDX_LLM_* variables out by hand
    live.env = {
        name: value
        for name, value in live.env.items()
        if not name.startswith("DDX_LLM_") or name in ("DDX_LLM_CONF_DIR", *env, "DDX_LLM_API_KEYS")
    }
    return live.start()


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request, tmp_path_factory) -> Iterator[LiveServer]:
    """conf/ as shipped (responses in SQLite under the project folder), one API key."""
    conf_dir = copy_project_conf(tmp_path_factory.mktemp(f"responses-{request.param}") / "conf")
    live = start(conf_dir, request.param)
    try:
        yield live
    finally:
        live.stop()


def client_of(server: LiveServer, key: str = KEY) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def sse(text: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body (``[DONE]`` last, left out)."""
    blocks = [block for block in text.split("\n\n") if block.strip()]
    assert blocks[-1] == "data: [DONE]"
    return [json.loads(block.removeprefix("data: ")) for block in blocks[:-1]]


def valid_events(text: str) -> list[dict[str, Any]]:
    events = sse(text)
    for event in events:
        EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


# --- the OpenAI Python SDK ---------------------------------------------------------------------


def test_create_retrieve_and_list_input_items(server):
    client = client_of(server)
    raw = client.responses.with_raw_response.create(
        model=MODEL, input=PROMPT, instructions="Answer briefly.", extra_body=ECHO
    )
    body = raw.http_response.json()
    created = Response.model_validate(body)
    assert created.output_text == PROMPT and created.status == "completed"
    assert raw.http_response.headers["x-request-id"]
    assert client.responses.retrieve(created.id).model_dump() == created.model_dump()
    listed = client.responses.input_items.with_raw_response.list(created.id)
    items = ResponseItemList.model_validate(listed.http_response.json())
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]


def test_stream_with_the_sdk_helper_and_raw(server):
    client = client_of(server)
    with client.responses.stream(model=MODEL, input=PROMPT, extra_body=ECHO) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == PROMPT
    assert kinds[:4] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added",
    ]  # fmt: skip
    assert kinds.count("response.output_text.delta") == len(PROMPT.split())
    assert kinds[-1] == "response.completed"
    body = {"model": MODEL, "input": PROMPT, "stream": True, **ECHO}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        text = http.post("/v1/responses", json=body).text
    events = valid_events(text)
    assert events[-1]["type"] == "response.completed"
    assert Response.model_validate(events[-1]["response"]).output_text == PROMPT


def test_tools_round_trip_both_ways(server):
    client = client_of(server)
    call = client.responses.create(model=MODEL, input=PROMPT, tools=[WEATHER])
    function_call = call.output[0]
    assert (function_call.type, function_call.name) == ("function_call", "get_weather")
    assert json.loads(function_call.arguments) == {"city": "Berlin"}
    result = {"type": "function_call_output", "call_id": function_call.call_id,
              "output": "Sunny, 21 degrees"}  # fmt: skip
    # 1: the conversation sent whole, the previous output included (items keep their ids)
    whole = [{"role": "user", "content": PROMPT}, *[i.model_dump() for i in call.output], result]
    stateless = client.responses.create(
        model=MODEL, input=whole, tools=[WEATHER], store=False, extra_body=ECHO
    )
    # 2: only the tool result, continuing the stored response
    chained = client.responses.create(
        model=MODEL, input=[result], previous_response_id=call.id, tools=[WEATHER], extra_body=ECHO
    )
    assert stateless.output_text == chained.output_text == PROMPT
    items = client.responses.input_items.list(chained.id, order="asc").data
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]
    assert items[1].id == function_call.id


def test_previous_response_id_then_delete(server):
    client = client_of(server)
    first = client.responses.create(model=MODEL, input="one two", extra_body=ECHO)
    second = client.responses.create(
        model=MODEL, input="three", previous_response_id=first.id, extra_body=ECHO
    )
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens
    client.responses.delete(first.id)
    with pytest.raises(NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(NotFoundError):
        client.responses.create(model=MODEL, input="x", previous_response_id=first.id)
    assert client.responses.retrieve(second.id).id == second.id  # self-contained


def test_sdk_errors(server):
    with pytest.raises(AuthenticationError):
        client_of(server, key="sk-wrong").responses.create(model=MODEL, input="hi")
    with pytest.raises(UnprocessableEntityError) as refused:
        client_of(server).responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert refused.value.body["code"] == "request_invalid"
    assert "tools.0.type" in refused.value.message


# --- the Vercel AI SDK -------------------------------------------------------------------------


def validate_exchange(exchange: dict[str, Any]) -> None:
    """One HTTP exchange of the AI SDK, validated with the OpenAI SDK's types."""
    assert exchange["status"] == 200, exchange
    streamed = exchange["contentType"].startswith("text/event-stream")
    if exchange["url"].endswith("/responses"):
        if streamed:
            events = valid_events(exchange["body"])
            assert events[-1]["type"] == "response.completed"
        else:
            Response.model_validate_json(exchange["body"])
    elif streamed:
        for chunk in sse(exchange["body"]):
            ChatCompletionChunk.model_validate(chunk)
    else:
        ChatCompletion.model_validate_json(exchange["body"])


def check_runs(runs: dict[str, Any]) -> None:
    for name in ("text", "stream"):
        assert runs[name]["text"] == PROMPT and runs[name]["finishReason"] == "stop"
    assert "".join(runs["stream"]["pieces"]) == PROMPT and len(runs["stream"]["pieces"]) == 6
    for name in ("toolTrip", "streamTrip"):
        first, second = runs[name]["steps"]
        assert first["finishReason"] == "tool-calls"
        assert first["toolCalls"] == [
            {"id": "call_0", "name": "get_weather", "input": {"city": "Berlin"}}
        ]
        assert first["toolResults"] == [{"id": "call_0", "output": "Sunny, 21 degrees in Berlin"}]
        assert second["text"] == PROMPT and runs[name]["finishReason"] == "stop"


def test_vercel_ai_sdk_chat_and_responses(node, server):  # noqa: F811
    done = subprocess.run(
        [node, "ai_sdk_openai.mjs", server.url, KEY, MODEL],
        cwd=ROOT / "tests" / "clients", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stderr}\n--- server log ---\n{server.log()[-3000:]}"
    seen = json.loads(done.stdout)
    assert seen["streamErrors"] == []
    check_runs(seen["chat"])
    check_runs(seen["responses"])
    assert seen["responses"]["text"]["responseId"].startswith("resp_")
    assert seen["responses"]["text"]["usage"]["outputTokens"] == 6
    exchanges = seen["exchanges"]
    assert len(exchanges) == 14
    for exchange in exchanges:
        validate_exchange(exchange)
    paths = [exchange["url"].rsplit("/v1", 1)[1] for exchange in exchanges]
    assert paths == ["/chat/completions"] * 6 + ["/responses"] * 8
    # the app resent the conversation: the assistant turn went as a reference to a stored item
    resent = exchanges[-2]["request"]["input"]
    assert resent[0]["type"] == "item_reference" and seen["resent"]["text"] == "And Paris?"
    assert (
        exchanges[-1]["request"]["previous_response_id"] == seen["responses"]["text"]["responseId"]
    )
    assert seen["chained"]["text"] == "And Rome?"


# --- replicas -----------------------------------------------------------------------------------


def test_replicas_share_conversations_through_redis(redis_server, tmp_path_factory):  # noqa: F811
    conf_dir = copy_project_conf(tmp_path_factory.mktemp("responses-replicas") / "conf")
    write_conf(conf_dir, {"responses": {"storage_uri": redis_server.url}})
    one = start(conf_dir, "asyncio")
    try:
        two = start(conf_dir, "trio")
        try:
            first = client_of(one).responses.create(model=MODEL, input="one two", extra_body=ECHO)
            second = client_of(two).responses.create(
                model=MODEL, input="three", previous_response_id=first.id, extra_body=ECHO
            )
            items = client_of(one).responses.input_items.list(second.id, order="asc").data
            assert [item.id for item in items][1] == first.output[0].id
            client_of(two).responses.delete(first.id)
            with pytest.raises(NotFoundError):
                client_of(one).responses.retrieve(first.id)
        finally:
            two.stop()
    finally:
        one.stop()
