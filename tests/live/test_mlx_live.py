"""Real mode under a real Hypercorn process (asyncio and trio workers) with the bundled SmolLM2:
the official OpenAI SDK, /health latency while generating, a client that leaves mid-stream, and
a steered end-to-end tool call.

One server per worker class serves the whole module (model load ~0.5 s, process start ~2 s).
The trio server runs the tools variant of the model (same weights, a tool-calling template).
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai_schemas import validate
from support import LiveServer, copy_project_conf

pytestmark = [pytest.mark.live, pytest.mark.model]

CHAT = "/v1/chat/completions"
SHORT_CHAT = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "What is the capital of France?"},
]
STORY_CHAT = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "Write a short story about a cat who learns to sail."},
]
"""A short prompt with a long answer: for tests that stop a generation midway."""
BUNDLED = "SmolLM2-135M-Instruct"
TOOLS = "SmolLM2-135M-Instruct-tools"


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request, mlx_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    worker = request.param
    conf = tmp_path_factory.mktemp(f"mlx-live-{worker}") / "conf"
    copy_project_conf(conf)
    env = {"DDX_LLM_USE_REAL_MODEL": "1", "DDX_LLM_MODELS_DIR": str(mlx_models_dir)}
    if worker == "trio":
        env["DDX_LLM_DEFAULT_MODEL"] = TOOLS
    live = LiveServer(conf, args=("-k", worker), env=env)
    with live:
        deadline = time.monotonic() + 60
        while (health := httpx.get(live.url + "/health").json())["model_state"] == "loading":
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.05)
        assert health["status"] == "ok", (health, live.log())
        live.worker = worker
        yield live


def mlx_status(url: str) -> dict:
    return httpx.get(url + "/health").json()["mlx"]


def test_openai_sdk_plain_and_streaming(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="not-checked", max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert BUNDLED in ids and TOOLS in ids
    answer = client.chat.completions.create(
        model=BUNDLED if server.worker == "asyncio" else TOOLS,
        messages=SHORT_CHAT,
        temperature=0,
        max_tokens=12,
    )
    assert "Paris" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

    stream = client.chat.completions.create(
        messages=SHORT_CHAT,
        model=answer.model,
        temperature=0,
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 3


def wait_idle(url: str, limit: float = 5) -> dict:
    deadline = time.monotonic() + limit
    while (status := mlx_status(url))["busy"]:
        assert time.monotonic() < deadline, "the worker kept generating"
        time.sleep(0.01)
    return status


def test_health_answers_in_milliseconds_while_generating(server):
    """50 /health calls during a streamed generation, which the client then leaves (a long
    answer cut short, so the worker is busy throughout on slow and fast hardware alike)."""
    body = {"messages": STORY_CHAT, "temperature": 0, "max_tokens": 1000, "stream": True}
    enough = threading.Event()

    def generate() -> None:
        with httpx.stream("POST", server.url + CHAT, json=body, timeout=60) as response:
            for _ in response.iter_lines():
                if enough.is_set():
                    break

    thread = threading.Thread(target=generate)
    thread.start()
    latencies = []
    try:
        with httpx.Client(base_url=server.url) as client:
            while not mlx_status(server.url)["busy"]:
                time.sleep(0.005)
            for _ in range(50):
                started = time.perf_counter()
                health = client.get("/health")
                elapsed = (time.perf_counter() - started) * 1000
                if health.json()["mlx"]["busy"]:
                    latencies.append(elapsed)
                time.sleep(0.02)
    finally:
        enough.set()
        thread.join(60)
    wait_idle(server.url)
    assert len(latencies) >= 10, "the generation should run during the health calls"
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"\n/health during generation ({server.worker}, {len(latencies)} calls): "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip
    assert p50 < 50 and p99 < 250, latencies


def test_client_leaving_mid_stream_stops_the_generation(server):
    body = {"messages": STORY_CHAT, "temperature": 0, "max_tokens": 1000, "stream": True}
    before = mlx_status(server.url)
    with (
        httpx.Client(base_url=server.url, timeout=60) as client,
        client.stream("POST", CHAT, json=body) as response,
    ):
        contents = 0
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                contents += 1
                if contents == 2:
                    break
    status = wait_idle(server.url, limit=3)
    time.sleep(0.5)
    after = mlx_status(server.url)
    assert after["tokens_generated"] == status["tokens_generated"]  # nothing generates any more
    assert after["requests_done"] == before["requests_done"] + 1
    # 2 tokens read, then the time the server takes to notice: far from the 1000 asked for
    assert after["tokens_generated"] - before["tokens_generated"] < 50


def test_steered_tool_call_streams_openai_tool_call_deltas(server, mlx_models_dir):
    """SmolLM2 does not call tools by itself.  Steering: the tools template shows the call
    format, and ``logit_bias`` +30 on the tokens of a sample call (and the end token) confines
    greedy decoding to them; the model itself orders them into a call.  ``parallel_tool_calls:
    false`` ends the generation after the first call.  Asserted: the OpenAI shapes only."""
    if server.worker != "trio":
        pytest.skip("runs once, on the server that has the tools variant loaded")
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(mlx_models_dir / TOOLS)
    sample = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    bias = {str(t): 30 for t in tokenizer.encode(sample + "<|im_end|>", add_special_tokens=False)}
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    body = {
        "model": TOOLS,
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        "tools": [tool],
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 40,
        "logit_bias": bias,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = httpx.post(server.url + CHAT, json=body, timeout=120)
    assert response.status_code == 200, response.text
    payloads = [b.removeprefix("data: ") for b in response.text.strip().split("\n\n")]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert not "".join(d.get("content") or "" for d in deltas).strip()
    header, *rest = calls
    assert re.fullmatch(r"call_[0-9a-f]{24}", header["id"])
    assert header["type"] == "function" and header["function"]["name"]
    assert all(c["index"] == 0 and "id" not in c for c in rest)
    arguments = json.loads("".join(c["function"].get("arguments", "") for c in calls))
    assert isinstance(arguments, dict)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] <= 40
