"""The playground in a real headless browser (Debian's chromium, driven by playwright-core)
against a real Hypercorn on the mock backend, asyncio and trio workers: the page loads with
the registry and the health, a swap shows our error shape (the mock has no real models), an
answer streams with its reasoning, tool calls, finish reason, TTFT and tokens/s, and Stop
really disconnects — ``/health`` goes idle and the generation ends as ``cancelled``.

Screenshots go to a temporary folder (``PLAYGROUND_SCREENSHOTS`` names another).  Auth and a
path prefix: test_playground_deploy.py; the bundled model: test_playground_model.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
from browser.playground_page import (
    ANSWER,
    answer_fields,
    ask,
    health,
    live_server,
    open_playground,
    page_problems,
    set_params,
    wait_answer,
    wait_idle,
)
from prometheus_client.parser import text_string_to_metric_families
from support import LiveServer, copy_project_conf

pytestmark = pytest.mark.live


RESIDENT = "mlx-community/Qwen3-4B-Instruct-2507-4bit"


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request, tmp_path_factory) -> Iterator[LiveServer]:
    conf_dir = copy_project_conf(tmp_path_factory.mktemp("playground") / "conf")
    with live_server(conf_dir, request.param) as live:
        yield live


def cancelled(server: LiveServer) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ddx_llm_request_success_total"
        and sample.labels.get("finished_reason") == "cancelled"
    )


def test_the_page_shows_the_registry_and_the_service(chromium, server, screenshots, request):
    open_playground(chromium, server.url + "/playground")
    listed = chromium.eval(
        """() => [...document.querySelectorAll("#models li")].map((item) => ({
            id: item.dataset.modelId, state: item.dataset.state,
            extras: item.querySelector(".extras").textContent,
            button: item.querySelector("button").textContent,
            disabled: item.querySelector("button").disabled }))"""
    )
    registry = httpx.get(server.url + "/v1/models").json()["data"]
    assert [item["id"] for item in listed] == [model["id"] for model in registry]
    assert listed[0] == {
        "id": RESIDENT, "state": "ready", "extras": "qwen3 · 4.02 B · 4bit · 256k context",
        "button": "Loaded", "disabled": True,
    }  # fmt: skip
    assert listed[1]["extras"].startswith("smollm2 · 135 M · Q4_1") and not listed[1]["disabled"]
    shown = chromium.text("#health-text")
    assert shown == f"mock · {RESIDENT} · ready · 0 running, 0 waiting"
    assert chromium.eval("() => document.getElementById('mock-options').hidden") is False
    chromium.screenshot(screenshots / f"loaded-{request.node.callspec.id}.png")
    assert page_problems(chromium) == []
    requests = chromium.call("log")["requests"]
    assert requests and all(r["url"].startswith(server.url + "/") for r in requests)


def test_a_swap_on_the_mock_shows_the_error_in_our_shape(chromium, server):
    open_playground(chromium, server.url + "/playground")
    chromium.call("click", selector='#models li[data-model-id="SmolLM2-135M-Instruct"] button')
    chromium.wait("#swap-status[data-outcome=error]")
    assert chromium.eval("() => document.getElementById('swap-status').dataset.code") == (
        "model_not_found"
    )
    assert chromium.text("#swap-status") == (
        "Swap to SmolLM2-135M-Instruct failed: 404 model_not_found: model loading is not "
        "available — server not in real-model mode"
    )
    assert health(server)["model"] == RESIDENT
    assert page_problems(chromium, expected=("404",)) == []


def test_an_answer_streams_in_with_its_figures(chromium, server, screenshots, request):
    open_playground(chromium, server.url + "/playground")
    set_params(chromium, scenario="echo", delay=150)
    ask(chromium, "the quick brown fox jumps")
    # The first word is on the page while the rest is still being generated.
    chromium.call(
        "waitFor",
        js="""(selector) => {
            const node = document.querySelector(selector);
            return node && node.dataset.state === "streaming"
                && node.querySelector("[data-field=content]").textContent === "the";
        }""",
        arg=ANSWER,
        timeout=10000,
    )
    assert chromium.eval("() => document.getElementById('stop').disabled") is False
    answer = wait_answer(chromium)
    assert answer["content"] == "the quick brown fox jumps"
    assert answer["model"] == RESIDENT
    assert answer["finish"] == "finish: stop" and answer["tokens"] == "5 tokens"
    assert answer["ttft"].startswith("TTFT ") and 100 <= int(answer["data"]["ttftMs"]) < 5000
    speed = float(answer["rate"].removesuffix(" tokens/s"))
    assert 1 < speed < 20  # one token per 150 ms: 6.7 tokens/s, give or take scheduling

    set_params(chromium, scenario="reasoning", delay=0)
    ask(chromium, "why is the sky blue")
    answer = wait_answer(chromium)
    assert answer["reasoningShown"] and answer["reasoning"] == "Thinking about: why is the sky blue"
    assert answer["content"] == "why is the sky blue" and answer["finish"] == "finish: stop"

    set_params(chromium, scenario="tool_call")
    ask(chromium, "weather in Berlin?")
    answer = wait_answer(chromium)
    assert answer["calls"] == [
        {"name": "get_weather", "arguments": '{"city":"Berlin"}', "id": "call_0"}
    ]
    assert answer["content"] == "" and answer["finish"] == "finish: tool_calls"
    chromium.screenshot(screenshots / f"answers-{request.node.callspec.id}.png")

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    set_params(chromium, scenario="echo", format="json_schema", schema=schema, stream=False)
    ask(chromium, "answer in JSON")
    answer = wait_answer(chromium)
    jsonschema.validate(json.loads(answer["content"]), schema)
    assert answer["ttft"].startswith("whole answer in ")

    set_params(chromium, scenario="error", format="", stream=True)
    ask(chromium, "one two three four")
    answer = wait_answer(chromium, state="error")
    assert answer["content"] == "one two" and answer["data"]["errorCode"] == "llm_error"
    assert answer["error"].startswith("llm_error: ")
    assert page_problems(chromium) == []


def test_the_conversation_is_sent_back_each_turn(chromium, server):
    open_playground(chromium, server.url + "/playground")
    set_params(chromium, scenario="echo", system="be brief")
    ask(chromium, "first")
    wait_answer(chromium)
    ask(chromium, "second")
    assert wait_answer(chromium)["content"] == "second"
    sent = [
        json.loads(r["body"])
        for r in chromium.call("log")["requests"]
        if r["url"].endswith("/v1/chat/completions")
    ]
    assert [body["messages"] for body in sent] == [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"}],
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "first"},
            {"role": "user", "content": "second"},
        ],
    ]
    assert sent[1]["stream"] is True and sent[1]["stream_options"] == {"include_usage": True}
    assert sent[1]["mock"] == {"scenario": "echo"}


def test_stop_disconnects_and_the_generation_ends(chromium, server, screenshots, request):
    """Stop aborts the fetch: the server sees the client leave, the request ends as
    ``cancelled`` and nothing runs — while the page (and its browser) stay open."""
    open_playground(chromium, server.url + "/playground")
    before = cancelled(server)
    words = " ".join(f"word{i}" for i in range(60))  # 60 x 250 ms: 15 s if nobody stopped it
    set_params(chromium, scenario="echo", delay=250)
    ask(chromium, words)
    chromium.call(
        "waitFor",
        js="""(selector) => (document.querySelector(selector + " [data-field=content]")
            ?.textContent ?? "").split(" ").length >= 2""",
        arg=ANSWER,
        timeout=10000,
    )
    assert health(server)["requests"]["running"] == 1
    stopped_at = time.monotonic()
    chromium.call("click", selector="#stop")
    idle_after = wait_idle(server, limit=5)
    answer = wait_answer(chromium, state="stopped")
    assert answer["finish"] == "finish: stopped (disconnected)"
    assert 2 <= len(answer["content"].split()) < 60
    deadline = stopped_at + 5
    while cancelled(server) < before + 1:
        assert time.monotonic() < deadline, "the generation did not end as cancelled"
        time.sleep(0.05)
    print(f"stop -> /health idle in {idle_after * 1000:.0f} ms")
    chromium.call(
        "waitFor",
        js="() => document.getElementById('health-text').textContent.endsWith(', 0 waiting')"
        " && document.getElementById('health-text').textContent.includes(' 0 running')",
        timeout=3000,
    )
    chromium.screenshot(screenshots / f"stopped-{request.node.callspec.id}.png")
    assert chromium.eval("() => document.getElementById('send').disabled") is False
    set_params(chromium, delay=0)
    ask(chromium, "again")
    assert wait_answer(chromium)["content"] == "again"
    assert answer_fields(chromium)["finish"] == "finish: stop"
