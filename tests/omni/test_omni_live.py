"""The omni backend under a real Hypercorn process (asyncio and trio workers), with the bundled
SmolLM2: chat, streams and tool-shaped requests answered by the upstream mlx-omni-server router
with our auth, request-ID, CORS, errors and metrics around it; its failures in our error shape;
``/health`` fast while it generates; a client leaving mid-stream.

One server per worker class serves the module (process start + upstream import + model load:
a few seconds).  Generation runs at roughly 10 tokens/s on a 2-core CPU, so answers are short.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time

import httpx
import pytest
from omni_support import APP_ORIGIN, BUNDLED, KEY
from support import documented

pytestmark = [pytest.mark.live, pytest.mark.model]

CHAT = "/v1/chat/completions"
AUTH = {"X-API-Key": KEY}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a short story about a cat who learns to sail."}]
"""A short prompt with a long answer: the model does not stop on its own early."""
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def chat(url: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(url + CHAT, json=body, headers={**AUTH, **(headers or {})}, timeout=60)


def stream_events(url: str, body: dict) -> tuple[httpx.Headers, list]:
    """The response headers and the stream's events (parsed chunks, then the string [DONE])."""
    with httpx.stream("POST", url + CHAT, json={**body, "stream": True}, headers=AUTH,
                      timeout=60) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response.headers, [d if d == "[DONE]" else json.loads(d) for d in data]


def health(url: str) -> dict:
    return httpx.get(url + "/health").json()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_chat_is_answered_upstream_with_our_middleware_around_it(omni_server, omni_models_dir):
    response = chat(
        omni_server.url,
        {"messages": QUESTION, "max_tokens": 8, "temperature": 0},
        {"Origin": APP_ORIGIN, "X-Request-ID": "omni-chat-1"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "omni-chat-1"
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == BUNDLED  # the registry id, not the server's folder
    assert str(omni_models_dir) not in response.text
    assert "Paris" in body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    refused = httpx.post(omni_server.url + CHAT, json={"messages": QUESTION},
                         headers={"Origin": APP_ORIGIN})  # fmt: skip
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert refused.headers["access-control-allow-origin"] == APP_ORIGIN


def test_max_tokens_gives_exactly_that_many_tokens(omni_server):
    """The upstream alone yields N-1 tokens for max_tokens N (and fails for 1); the proxy
    asks it for one more."""
    for limit in (1, 3):
        response = chat(omni_server.url, {"messages": STORY, "max_tokens": limit,
                                          "temperature": 0})  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == limit


def test_stream_keeps_the_upstream_shape_with_our_model_id(omni_server):
    headers, events = stream_events(
        omni_server.url, {"messages": QUESTION, "max_tokens": 4, "temperature": 0}
    )
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-accel-buffering"] == "no" and headers["cache-control"] == "no-cache"
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["model"] == BUNDLED and c["object"] == "chat.completion.chunk" for c in chunks)
    assert not any("usage" in c for c in chunks)  # asked for upstream, dropped: not requested
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert all(pieces[:4]) and pieces[4:] == [None]  # 4 tokens, then the finish chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    _, events = stream_events(
        omni_server.url,
        {"messages": QUESTION, "max_tokens": 4, "temperature": 0,
         "stream_options": {"include_usage": True}},
    )  # fmt: skip
    assert events[-2]["usage"]["completion_tokens"] == 4 and events[-2]["model"] == BUNDLED


def test_tool_shaped_requests_pass_through(omni_server):
    """SmolLM2 has no tool template, so it answers in text: the request shapes are what is
    tested (tools, a tool-call round trip), non-streaming and streaming."""
    ask = {"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
           "tools": [WEATHER_TOOL], "max_tokens": 6, "temperature": 0}  # fmt: skip
    response = chat(omni_server.url, ask)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "tool_calls")
    _, events = stream_events(omni_server.url, ask)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] in (
        "stop", "tool_calls",
    )  # fmt: skip
    call = {"id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    round_trip = {
        **ask,
        "messages": [
            *ask["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": '{"temp_c": 21}'},
        ],
    }
    response = chat(omni_server.url, round_trip)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == BUNDLED


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"model": "no-such-model", "messages": QUESTION}, 404, "model_not_found", None),
        ({"messages": []}, 422, "request_invalid", "messages"),
        ({"messages": QUESTION, "temperature": 5}, 422, "request_invalid", "temperature"),
        ({"messages": QUESTION, "n": 2}, 422, "request_invalid", "n"),
        ({"messages": QUESTION, "stop": ["\n"]}, 422, "request_invalid", "stop"),
        ({"messages": QUESTION, "adapter_path": "/tmp"}, 422, "request_invalid", "adapter_path"),
        # passes our schema, fails FastAPI's upstream (content parts must map str to str)
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}]},
         422, "request_invalid", "messages.0.content"),
        # the upstream crashes on it (AttributeError) and answers a text/plain 500 on its own
        ({"messages": QUESTION, "max_tokens": 2, "extra_body": "x"}, 500, "llm_error", None),
    ],
)  # fmt: skip
def test_errors_have_our_shape(omni_server, body, status, code, field):
    response = chat(omni_server.url, body, {"X-Request-ID": "omni-error"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "omni-error"
    error = documented(response.json())
    assert error["code"] == code
    if field is not None:
        assert any(item["field"].startswith(field) for item in error["detail"]), error
    assert "Traceback" not in response.text


def test_the_body_limit_applies_to_omni_chat(omni_server):
    """The proxy sits outside the core's body limit, so it applies ``max_body_bytes`` itself."""
    big = [{"role": "user", "content": "x" * 1_100_000}]
    response = chat(omni_server.url, {"messages": big})
    assert response.status_code == 413
    assert documented(response.json())["code"] == "request_too_large"


def test_metrics_count_omni_requests(omni_server):
    before = httpx.get(omni_server.url + "/metrics").text
    stream_events(omni_server.url, {"messages": STORY, "max_tokens": 4, "temperature": 0})
    after = httpx.get(omni_server.url + "/metrics").text
    model = {"model_name": BUNDLED}

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("ddx_llm_request_success_total", finished_reason="stop", **model) == 1
    assert grew("ddx_llm_generation_tokens_total", **model) == 4
    assert grew("ddx_llm_prompt_tokens_total", **model) > 0
    assert grew("ddx_llm_time_to_first_token_seconds_count", **model) == 1
    assert grew("ddx_llm_inter_token_latency_seconds_count", **model) == 3
    assert grew("ddx_llm_requests_total", route=CHAT, method="POST", status="200") == 1
    assert metric(after, "ddx_llm_num_requests_running", **model) == 0


def test_health_stays_fast_while_omni_generates(omni_server):
    """/health polled every 20 ms during a 40-token stream (the bare upstream router would
    answer only after the whole generation: 4-7 s here)."""
    body = {"messages": STORY, "max_tokens": 40, "temperature": 0, "stream": True}
    thread = threading.Thread(target=lambda: chat(omni_server.url, body))
    thread.start()
    latencies = []
    with httpx.Client(base_url=omni_server.url) as client:
        while not health(omni_server.url)["omni"]["in_flight"]:
            time.sleep(0.005)
        while thread.is_alive():
            started = time.perf_counter()
            busy = client.get("/health").json()["omni"]["in_flight"]
            if busy:
                latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    thread.join()
    assert len(latencies) >= 20, latencies
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"\n/health during omni generation ({omni_server.worker}, {len(latencies)} calls): "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")  # fmt: skip
    assert p99 < 50, latencies


def test_two_streams_interleave(omni_server):
    """Both streams deliver tokens before either ends: our side does not serialize them."""
    body = {"messages": STORY, "max_tokens": 12, "temperature": 0, "stream": True}
    firsts: dict[int, float] = {}
    ends: dict[int, float] = {}

    def run(index: int) -> None:
        with httpx.stream("POST", omni_server.url + CHAT, json=body, headers=AUTH,
                          timeout=60) as response:  # fmt: skip
            for line in response.iter_lines():
                if '"content"' in line:
                    firsts.setdefault(index, time.monotonic())
        ends[index] = time.monotonic()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert max(firsts.values()) < min(ends.values()), (firsts, ends)


def test_client_leaving_mid_stream_stops_the_upstream(omni_server):
    before = httpx.get(omni_server.url + "/metrics").text
    body = {"messages": STORY, "max_tokens": 1000, "temperature": 0, "stream": True}
    with httpx.stream("POST", omni_server.url + CHAT, json=body, headers=AUTH,
                      timeout=60) as response:  # fmt: skip
        contents = 0
        for line in response.iter_lines():
            contents += '"content"' in line
            if contents == 3:
                break
    deadline = time.monotonic() + 5
    while health(omni_server.url)["omni"]["in_flight"]:
        assert time.monotonic() < deadline, "the upstream kept generating"
        time.sleep(0.02)
    started = time.monotonic()
    answer = chat(omni_server.url, {"messages": QUESTION, "max_tokens": 2, "temperature": 0})
    assert answer.status_code == 200 and time.monotonic() - started < 5
    after = httpx.get(omni_server.url + "/metrics").text
    labels = {"finished_reason": "cancelled", "model_name": BUNDLED}
    assert metric(after, "ddx_llm_request_success_total", **labels) == (
        metric(before, "ddx_llm_request_success_total", **labels) + 1
    )


def test_stream_over_h2c(omni_server):
    """HTTP/2 forbids the upstream's ``Connection`` header: the proxy drops it."""
    body = {"messages": QUESTION, "max_tokens": 3, "temperature": 0, "stream": True}
    with (
        httpx.Client(base_url=omni_server.url, http1=False, http2=True, timeout=60) as client,
        client.stream("POST", CHAT, json=body, headers=AUTH) as response,
    ):
        assert response.http_version == "HTTP/2" and response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert "connection" not in response.headers
    assert lines[-1] == "data: [DONE]" and len(lines) == 5  # 3 tokens, the finish chunk, DONE
