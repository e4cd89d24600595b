"""The seed document's own client code, run unchanged against a real Hypercorn (asyncio and trio
workers) in mock mode: its Next.js OpenAI Node SDK client (tests/clients/llm.mjs), its Next.js
streaming proxy read by a browser-style ``fetch`` (proxy.mjs), its NestJS service (nest.mjs), and
its Python ``AsyncOpenAI`` and raw-``httpx`` functions (below).

The Node scripts print JSON observations; the assertions are here.  They need node (>= 20) and
npm: the pinned packages are installed with ``npm ci`` once per session when missing; without node
the tests skip, or fail when ``CI`` is set.

One thing the Node SDK does differently from the Python one: it reads an error body only from
OpenAI's ``{"error": {...}}`` envelope, which is why our error bodies repeat ``code`` and
``message`` there (without it the SDK reports "<status> status code (no body)").
In-band stream errors (``data: {"error": {...}}``) do reach it in full.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, AuthenticationError
from support import ROOT, LiveServer, copy_project_conf, documented

pytestmark = pytest.mark.live

CLIENTS = ROOT / "tests" / "clients"
KEY = "sk-seed-clients-0123456789abcdef"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
PROMPT = "What is the weather in Berlin?"
CANNED_CALL = {"id": "call_0", "name": "get_weather", "arguments": '{"city":"Berlin"}'}


# --- fixtures -------------------------------------------------------------------------------


def node_packages_installed() -> bool:
    """Every package of package-lock.json is in node_modules at its locked version."""
    lock = json.loads((CLIENTS / "package-lock.json").read_text())
    for path, meta in lock["packages"].items():
        manifest = CLIENTS / path / "package.json"
        if path and not meta.get("optional"):
            if not manifest.exists():
                return False
            if json.loads(manifest.read_text()).get("version") != meta["version"]:
                return False
    return True


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable, with the pinned packages of tests/clients installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    version = ""
    if node:
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if not npm or not version.startswith("v") or int(version[1:].split(".")[0]) < 20:
        message = f"the seed's Node clients need node >= 20 and npm (node: {version or 'absent'})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if not node_packages_installed():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CLIENTS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {CLIENTS} failed:\n{done.stdout}\n{done.stderr}")
    return node


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request, tmp_path_factory) -> Iterator[LiveServer]:
    """conf/ as shipped (mock backend, conf/hypercorn.toml) with one API key."""
    conf_dir = tmp_path_factory.mktemp("seed") / "conf"
    copy_project_conf(conf_dir)
    live = LiveServer(
        conf_dir,
        args=("--config", str(conf_dir / "hypercorn.toml"), "-k", request.param),
        env={"DDX_LLM_API_KEYS": KEY},
    )
    # Module-scoped: drop DDX_LLM_* variables of the outer environment by hand.
    live.env = {
        name: value
        for name, value in live.env.items()
        if not name.startswith("DDX_LLM_") or name in ("DDX_LLM_API_KEYS", "DDX_LLM_CONF_DIR")
    }
    live.start()
    try:
        yield live
    finally:
        live.stop()


def run_client(node: str, script: str, server: LiveServer) -> dict[str, Any]:
    """Run ``node <script> <url> <key>`` and return the JSON it prints."""
    done = subprocess.run(
        [node, script, server.url, KEY],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        f"node {script} exited {done.returncode}:\n{done.stderr}\n"
        f"--- server log (tail) ---\n{server.log()[-3000:]}"
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def llm(node, server) -> dict[str, Any]:
    return run_client(node, "llm.mjs", server)


@pytest.fixture(scope="module")
def proxy(node, server) -> dict[str, Any]:
    return run_client(node, "proxy.mjs", server)


@pytest.fixture(scope="module")
def nest(node, server) -> dict[str, Any]:
    return run_client(node, "nest.mjs", server)


def sse_events(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, ``[DONE]`` kept as the string."""
    events = []
    for line in text.split("\n"):
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assemble_calls(deltas: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI tool-call deltas → whole calls (id, name, arguments)."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
        call["id"] += delta.get("id") or ""
        call["name"] += (delta.get("function") or {}).get("name") or ""
        call["arguments"] += (delta.get("function") or {}).get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


def assert_incremental(times_ms: list[int], delay_ms: int) -> None:
    """Pieces generated ``delay_ms`` apart arrived spread out, not in one burst at the end."""
    assert len(times_ms) >= 6, times_ms
    spread = times_ms[-1] - times_ms[0]
    assert spread >= 0.5 * delay_ms * (len(times_ms) - 1), times_ms
    assert len(set(times_ms)) >= len(times_ms) // 2, times_ms


# --- the Next.js service-side client: OpenAI Node SDK ----------------------------------------


def test_node_sdk_parses_the_canned_tool_call(llm):
    completion = llm["completion"]
    message = completion["message"]
    assert completion["finish_reason"] == "tool_calls"
    assert message["content"] is None
    call = message["tool_calls"][0]
    assert (call["id"], call["type"]) == ("call_0", "function")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Berlin"}
    usage = completion["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    # The seed's chat() returns content ?? '': nothing in mock mode, as the seed documents.
    assert llm["seed_chat"] == ""
    assert MODEL in llm["model_ids"]


def test_node_sdk_streams_tool_call_deltas_and_echo(llm):
    tool_stream = llm["tool_call_stream"]
    assert tool_stream["calls"] == [CANNED_CALL]
    assert tool_stream["finish_reason"] == "tool_calls"
    # The vendor field `mock` went through create() untouched: the echo scenario answered.
    echo = llm["echo_stream"]
    assert echo["text"] == PROMPT
    assert echo["finish_reason"] == "stop"
    assert len(echo["pieces"]) == len(PROMPT.split())


def test_node_sdk_error_classes(llm):
    expected = {
        "wrong_key": ("AuthenticationError", 401),
        "bad_request": ("UnprocessableEntityError", 422),
        "unknown_model": ("NotFoundError", 404),
    }
    for case, (cls, status) in expected.items():
        error = llm[case]
        assert error["thrown"] and error["isAPIError"], (case, error)
        assert (error["class"], error["status"]) == (cls, status), (case, error)
        assert error["requestID"], (case, error)  # from our X-Request-ID header
        # The SDK reads the body's OpenAI envelope: our code and message reach the client.
        assert error["error"]["code"] == error["code"], (case, error)
        assert error["message"] == f"{status} {error['error']['message']}", (case, error)
        assert KEY not in json.dumps(error)


def test_node_sdk_sees_an_in_band_stream_error(llm):
    failed = llm["error_stream"]
    assert failed["thrown"] and failed["class"] == "APIError"
    assert failed["received"] == "What is"  # two words, then the failure
    assert failed["error"]["code"] == failed["code"] == "llm_error"
    assert failed["message"] == failed["error"]["message"]


# --- the Next.js streaming proxy and a browser fetch ----------------------------------------


def test_proxy_streams_sse_incrementally_to_the_browser(proxy):
    echo = proxy["echo"]
    assert echo["status"] == 200
    headers = echo["headers"]
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache, no-transform"
    assert headers["x-accel-buffering"] == "no"
    assert echo["done"], echo
    assert echo["text"] == "one two three four five six seven eight"
    assert echo["events"][-1]["finish_reason"] == "stop"
    assert_incremental([e["ms"] for e in echo["events"] if e["content"]], delay_ms=100)


def test_proxy_streams_the_canned_tool_call(proxy):
    stream = proxy["tool_call"]
    assert stream["status"] == 200 and stream["done"]
    deltas = [d for event in stream["events"] for d in event["tool_calls"] or []]
    assert assemble_calls(deltas) == [CANNED_CALL]
    assert stream["events"][-1]["finish_reason"] == "tool_calls"


def test_browser_leaving_the_proxy_stops_the_generation(proxy):
    left = proxy["abandoned"]
    assert left["text"] == "one two" and not left["done"]
    assert left["upstream_running_before"] >= 1
    # Six pieces of 400 ms were left to generate; the server noticed the proxy hang up first.
    assert left["upstream_running_after"] == 0, left
    assert left["upstream_idle_ms"] < 1500, left


def test_proxy_answers_502_for_an_upstream_401(proxy):
    refused = proxy["unauthorized"]
    assert (refused["status"], refused["text"]) == (502, "llm upstream 401")


# --- the NestJS service -----------------------------------------------------------------------


def test_nest_chat_returns_the_chat_response_shape(nest):
    response = nest["chat"]
    assert isinstance(response["id"], str) and response["id"]
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Berlin"}'},
        }
    ]


def test_nest_errors(nest):
    assert nest["chat_wrong_key"] == "llm 401"
    assert nest["chat_bad_request"] == "llm 422"
    assert nest["chat_without_key"] == 'Configuration key "LLM_API_KEY" does not exist'
    refused = nest["stream_wrong_key"]
    assert refused == {"error": "llm 401", "writes": [], "ended": False}


def test_nest_stream_writes_the_sse_to_the_sink(nest):
    tool_call = nest["stream_tool_call"]
    assert tool_call["error"] is None and tool_call["ended"]
    text = "".join(write["text"] for write in tool_call["writes"])
    assert text.endswith("data: [DONE]\n\n")
    chunks = sse_events(text)[:-1]
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert assemble_calls(deltas) == [CANNED_CALL]

    echo = nest["stream_echo"]
    assert echo["error"] is None and echo["ended"]
    chunks = sse_events("".join(write["text"] for write in echo["writes"]))
    assert chunks[-1] == "[DONE]"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == PROMPT
    assert_incremental([write["ms"] for write in echo["writes"]], delay_ms=100)


# --- Python: the seed's AsyncOpenAI functions and raw-httpx hot swap ------------------------


def seed_python_client(base_url: str, api_key: str):
    """The seed's ``client``, ``ask`` and ``stream`` as written there, with the base URL and key
    as arguments; ``stream`` also forwards ``extra_body`` (None, as the seed, unless given)."""
    client = AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
    )

    async def ask(prompt: str) -> str:
        r = await client.chat.completions.create(
            model="mlx-community/Qwen3-4B-Instruct-2507-4bit",
            messages=[{"role": "user", "content": prompt}],
        )
        return r.choices[0].message.content or ""

    async def stream(prompt: str, extra_body: dict | None = None):
        async for chunk in await client.chat.completions.create(
            model="mlx-community/Qwen3-4B-Instruct-2507-4bit",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            extra_body=extra_body,
        ):
            delta = chunk.choices[0].delta.content
            if delta:
                yield delta

    return client, ask, stream


async def swap_model(base_url: str, api_key: str, model_id: str) -> dict:
    """The seed's ``swap_model``, with the base URL and key as arguments."""
    async with httpx.AsyncClient(timeout=120) as cli:
        r = await cli.post(
            f"{base_url}/v1/models/load",
            headers={"X-API-Key": api_key},
            json={"model_id": model_id},
        )
        r.raise_for_status()
        return r.json()  # { swapped, load_ms, loaded }


@pytest.mark.anyio
async def test_seed_ask_and_stream_with_bearer_auth(server):
    client, ask, stream = seed_python_client(server.url + "/v1", KEY)
    async with client:
        # Mock mode answers with a tool call: content is null, so ask() returns "" (seed's table:
        # "No assistant content in mock mode").
        assert await ask(PROMPT) == ""
        assert [delta async for delta in stream(PROMPT)] == []
        echo = {"mock": {"scenario": "echo"}}
        pieces = [delta async for delta in stream(PROMPT, extra_body=echo)]
    assert "".join(pieces) == PROMPT and len(pieces) == len(PROMPT.split())

    stranger, ask_as_stranger, _ = seed_python_client(server.url + "/v1", "not-" + KEY)
    async with stranger:
        with pytest.raises(AuthenticationError) as raised:
            await ask_as_stranger(PROMPT)
    assert raised.value.status_code == 401 and raised.value.body["code"] == "unauthorized"


@pytest.mark.anyio
async def test_seed_swap_model_in_mock_mode(server):
    with pytest.raises(httpx.HTTPStatusError) as raised:
        await swap_model(server.url, KEY, MODEL)
    response = raised.value.response
    body = response.json()
    assert response.status_code == 404
    assert (body["code"], body["detail"]) == ("model_not_found", "server not in real-model mode")
    assert set(documented(body)) == {"code", "message", "detail"} and body["message"]

    with pytest.raises(httpx.HTTPStatusError) as raised:
        await swap_model(server.url, "not-" + KEY, MODEL)
    assert raised.value.response.status_code == 401


def test_node_clients_lockfile_pins_exact_versions():
    """package.json pins exact versions and package-lock.json agrees with it."""
    manifest = json.loads((CLIENTS / "package.json").read_text())
    lock = json.loads((CLIENTS / "package-lock.json").read_text())
    for name, version in manifest["dependencies"].items():
        assert version[0].isdigit(), f"{name} must be pinned exactly, not {version!r}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
