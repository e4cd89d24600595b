"""The Anthropic Messages surface under a real Hypercorn (asyncio and trio workers), used by the
official clients unchanged: the Anthropic Python SDK (``messages.create``, ``messages.stream``,
a tools round trip, ``count_tokens``, its error classes) and the Vercel AI SDK's Anthropic
provider in Node (tests/clients/ai_sdk_anthropic.mjs), on the mock backend; then the bundled
SmolLM2 for real (a few tokens).  Every body and raw stream event is validated against the
``anthropic`` SDK's own types.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import BaseModel, TypeAdapter
from support import ROOT, LiveServer, copy_project_conf

pytestmark = pytest.mark.live

KEY = "sk-messages-live-0123456789abcdef"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
PROMPT = "What is the weather in Berlin today"
USER = [{"role": "user", "content": PROMPT}]
ECHO = {"mock": {"scenario": "echo"}}
CLIENTS = ROOT / "tests" / "clients"
EVENT = TypeAdapter(RawMessageStreamEvent)


def strict(value: Any, where: str = "answer") -> Any:
    """``value`` (an SDK object) with no field the SDK's types do not define, recursively."""
    if isinstance(value, BaseModel):
        assert not value.model_extra, f"{where}: unknown fields {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            strict(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            strict(item, f"{where}.{index}")
    return value


def raw_events(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a streamed request with httpx and validate every event but pings."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    response = httpx.post(url + "/v1/messages", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    events = []
    for block in response.text.strip().split("\n\n"):
        name, data = (line.split(": ", 1)[1] for line in block.split("\n"))
        payload = json.loads(data)
        assert payload["type"] == name
        if name != "ping":
            strict(EVENT.validate_python(payload), name)
            events.append(payload)
    return events


def sdk(server: LiveServer, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request, tmp_path_factory) -> Iterator[LiveServer]:
    """conf/ as shipped (mock backend) with one API key."""
    conf_dir = tmp_path_factory.mktemp("messages") / "conf"
    copy_project_conf(conf_dir)
    live = LiveServer(conf_dir, args=("-k", request.param), env={"DDX_LLM_API_KEYS": KEY})
    live.env = {  # module-scoped: drop DDX_LLM_* of the outer environment by hand
        name: value
        for name, value in live.env.items()
        if not name.startswith("DDX_LLM_") or name in ("DDX_LLM_API_KEYS", "DDX_LLM_CONF_DIR")
    }
    with live:
        yield live


# --- the Anthropic Python SDK -----------------------------------------------------------------


def test_create(server):
    client = sdk(server)
    called = strict(client.messages.create(model=MODEL, max_tokens=64, messages=USER))
    echoed = strict(
        client.messages.create(
            model=MODEL, max_tokens=64, messages=USER, system="Be brief.", extra_body=ECHO
        )
    )
    assert isinstance(called, Message) and called.stop_reason == "tool_use"
    [call] = called.content
    assert (call.name, call.input) == ("get_weather", {"city": "Berlin"})
    assert called._request_id  # from the request-id header
    assert echoed.content[0].text == PROMPT and echoed.stop_reason == "end_turn"
    assert echoed.usage.input_tokens > 0 and echoed.usage.output_tokens == len(PROMPT.split())


def test_stream(server):
    client = sdk(server)
    pacing = {"mock": {"scenario": "echo", "token_delay_ms": 50}}
    pieces, times = [], []
    started = time.monotonic()
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=USER, extra_body=pacing
    ) as stream:
        for text in stream.text_stream:
            pieces.append(text)
            times.append(time.monotonic() - started)
        final = strict(stream.get_final_message())
    assert "".join(pieces) == PROMPT == final.content[0].text
    assert times[-1] - times[0] >= 0.5 * 0.05 * (len(times) - 1)  # arrived as generated
    assert final.stop_reason == "end_turn" and final.usage.input_tokens > 0
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=USER, extra_body={"mock": {"scenario": "reasoning"}}
    ) as stream:
        thought = strict(stream.get_final_message())
    assert [block.type for block in thought.content] == ["thinking", "text"]
    assert thought.content[0].thinking == f"Thinking about: {PROMPT}"


def test_every_raw_event_is_an_sdk_event(server):
    text = raw_events(
        server.url,
        {
            "model": MODEL,
            "max_tokens": 64,
            "messages": USER,
            "stream": True,
            "stop_sequences": ["Berlin"],
            **ECHO,
        },
    )
    tool = raw_events(
        server.url, {"model": MODEL, "max_tokens": 64, "messages": USER, "stream": True}
    )
    assert text[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "Berlin"}
    assert tool[-2]["delta"]["stop_reason"] == "tool_use"
    assert tool[0]["type"] == "message_start" and tool[-1]["type"] == "message_stop"


def test_tools_round_trip(server):
    client = sdk(server)
    tools = [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    first = strict(client.messages.create(model=MODEL, max_tokens=64, messages=USER, tools=tools))
    [call] = first.content
    assert first.stop_reason == "tool_use" and call.type == "tool_use"
    turns = [
        *USER,
        first.to_param(),
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
        },
    ]
    second = strict(
        client.messages.create(
            model=MODEL, max_tokens=64, messages=turns, tools=tools, extra_body=ECHO
        )
    )
    # the mock's echo answers the last user text: the question, still the last one
    assert second.stop_reason == "end_turn" and second.content[0].text == PROMPT
    assert second.usage.input_tokens > first.usage.input_tokens  # the call and result count
    forced = strict(
        client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=USER,
            tools=tools,
            tool_choice={"type": "tool", "name": "get_weather"},
            extra_body=ECHO,  # not the canned call: the mock honours the forced one
        )
    )
    assert forced.stop_reason == "tool_use" and forced.content[0].name == "get_weather"
    assert set(forced.content[0].input) <= {"city"}
    counted = client.messages.count_tokens(model=MODEL, messages=turns, tools=tools)
    assert isinstance(counted, MessageTokensCount)
    assert strict(counted).input_tokens == second.usage.input_tokens


def test_errors_are_the_sdk_classes(server):
    client = sdk(server)
    with pytest.raises(anthropic.AuthenticationError) as wrong_key:
        sdk(server, key="sk-wrong").messages.create(model=MODEL, max_tokens=8, messages=USER)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="claude-nope", max_tokens=8, messages=USER)
    with pytest.raises(anthropic.BadRequestError) as top_k:
        client.messages.create(model=MODEL, max_tokens=8, messages=USER, extra_body={"top_k": -1})
    with pytest.raises(anthropic.APIStatusError) as mid_stream:
        with client.messages.stream(
            model=MODEL, max_tokens=8, messages=USER, extra_body={"mock": {"scenario": "error"}}
        ) as stream:
            stream.until_done()
    assert wrong_key.value.status_code == 401
    assert wrong_key.value.body["error"]["type"] == "authentication_error"
    assert unknown.value.body["error"] == {
        "type": "not_found_error",
        "message": "model 'claude-nope' is not in the registry",
    }
    assert top_k.value.body["error"]["message"].startswith("top_k: ")
    assert mid_stream.value.body["error"]["type"] == "api_error"
    assert "mock failure" in mid_stream.value.body["error"]["message"]


# --- the Vercel AI SDK's Anthropic provider (Node) ----------------------------------------------


@pytest.fixture(scope="session")
def node() -> str:
    """node >= 20 with the pinned packages of tests/clients (``npm ci`` when missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    version = (
        subprocess.run([node, "--version"], capture_output=True, text=True).stdout if node else ""
    )
    if not npm or not version.startswith("v") or int(version[1:].split(".")[0]) < 20:
        message = f"the AI SDK client needs node >= 20 and npm (node: {version or 'absent'})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if not (CLIENTS / "node_modules" / "@ai-sdk" / "anthropic").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CLIENTS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    return node


def test_vercel_ai_sdk_anthropic_provider(node, server):
    done = subprocess.run(
        [node, "ai_sdk_anthropic.mjs", server.url, KEY, MODEL],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{done.stderr}\n--- server log ---\n{server.log()[-3000:]}"
    seen = json.loads(done.stdout)
    generated = seen["generated"]
    assert (generated["text"], generated["finishReason"]) == (PROMPT, "stop")
    assert generated["usage"]["input"] > 0 and generated["usage"]["output"] == 7
    assert generated["responseId"].startswith("msg_") and generated["modelId"] == MODEL
    stopped = seen["stopped"]
    assert stopped["text"] == "What is the weather in " and stopped["stopSequence"] == "Berlin"
    assert stopped["rawFinishReason"] == "stop_sequence"
    streamed = seen["streamed"]
    assert streamed["pieces"] == [" " + w if i else w for i, w in enumerate(PROMPT.split())]
    assert streamed["times"][-1] - streamed["times"][0] >= 0.5 * 40 * (len(streamed["times"]) - 1)
    assert streamed["usage"] == generated["usage"] and streamed["finishReason"] == "stop"
    assert seen["reasoned"] == {"reasoning": f"Thinking about: {PROMPT}", "text": PROMPT}
    trip = seen["toolRoundTrip"]
    assert trip["calls"] == [{"id": "call_0", "name": "get_weather", "input": {"city": "Berlin"}}]
    assert trip["results"][0]["output"] == {"city": "Berlin", "forecast": "sunny"}
    assert (trip["steps"], trip["firstFinish"], trip["finalFinish"]) == (2, "tool-calls", "stop")
    assert trip["finalText"] == PROMPT
    [result] = trip["sentResult"]["content"]
    assert (result["type"], result["tool_use_id"]) == ("tool_result", "call_0")
    assert json.loads(result["content"]) == {"city": "Berlin", "forecast": "sunny"}
    streamed_call = seen["streamedToolCall"]
    assert "".join(streamed_call["inputDeltas"]) == '{"city":"Berlin"}'
    assert streamed_call["calls"] == [{"name": "get_weather", "input": {"city": "Berlin"}}]
    assert streamed_call["finishReason"] == "tool-calls"
    failures = seen["failures"]
    assert failures["notFound"]["status"] == 404 and failures["notFound"]["isAPICallError"]
    assert "not in the registry" in failures["notFound"]["message"]
    assert failures["midStream"]["text"] == "What is"
    assert failures["midStream"]["errors"][0]["type"] == "api_error"


# --- real mode: the bundled SmolLM2 -------------------------------------------------------------

TOOLS_MODEL = "SmolLM2-135M-Instruct-tools"
SHORT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def real_server(request, mlx_models_dir: Path, tmp_path_factory) -> Iterator[LiveServer]:
    conf_dir = tmp_path_factory.mktemp(f"messages-mlx-{request.param}") / "conf"
    copy_project_conf(conf_dir)
    env = {
        "DDX_LLM_USE_REAL_MODEL": "1",
        "DDX_LLM_MODELS_DIR": str(mlx_models_dir),
        "DDX_LLM_DEFAULT_MODEL": TOOLS_MODEL,
    }
    with LiveServer(conf_dir, args=("-k", request.param), env=env) as live:
        deadline = time.monotonic() + 60
        while httpx.get(live.url + "/health").json()["model_state"] == "loading":
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.05)
        yield live


@pytest.mark.model
def test_smollm2_through_the_anthropic_sdk(real_server, mlx_models_dir):
    from mlx_lm.utils import load_tokenizer

    client = sdk(real_server, key="not-checked")
    asked = {
        "model": TOOLS_MODEL,
        "max_tokens": 8,
        "messages": SHORT,
        "system": "",
        "extra_body": {"temperature": 0},
    }
    answer = strict(client.messages.create(**asked))
    assert "Paris" in answer.content[0].text
    assert answer.stop_reason in ("end_turn", "max_tokens") and answer.usage.output_tokens <= 8
    with client.messages.stream(**asked) as stream:
        streamed = strict(stream.get_final_message())
    assert streamed.content[0].text == answer.content[0].text  # greedy: the same answer
    stopped = strict(client.messages.create(**asked, stop_sequences=["Paris"]))
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "Paris"
    assert "Paris" not in stopped.content[0].text
    assert stopped.usage.input_tokens == answer.usage.input_tokens
    # count_tokens is the model's own chat template and tokenizer, tools included
    tools = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    counted = client.messages.count_tokens(model=TOOLS_MODEL, messages=SHORT, system="")
    with_tools = client.messages.count_tokens(
        model=TOOLS_MODEL, messages=SHORT, system="", tools=tools
    )
    assert counted.input_tokens == answer.usage.input_tokens
    tokenizer = load_tokenizer(mlx_models_dir / TOOLS_MODEL)
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": ""}, *SHORT],
        tools=[
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": tools[0]["input_schema"]},
            }
        ],
        add_generation_prompt=True,
    )
    assert with_tools.input_tokens == len(rendered) > counted.input_tokens
    # a forced tool call: honoured, or refused naming tool_choice — never a silent text answer
    # closed (no extra properties): the call fits in 40 tokens whatever is sampled
    bounded = [{"name": "get_weather", "input_schema": {"type": "object", "required": ["city"],
                "properties": {"city": {"enum": ["Paris", "Berlin"]}},
                "additionalProperties": False}}]  # fmt: skip
    try:
        forced = client.messages.create(
            model=TOOLS_MODEL, max_tokens=40, messages=SHORT, tools=bounded,
            tool_choice={"type": "any"},
        )  # fmt: skip
    except anthropic.BadRequestError as refused:
        assert refused.body["detail"][0]["field"] == "tool_choice", refused.body
        assert "tool_choice" in refused.body["error"]["message"]
    else:
        assert strict(forced).stop_reason == "tool_use", forced
        assert forced.content[-1].name == "get_weather"
        assert forced.content[-1].input["city"] in ("Paris", "Berlin")
