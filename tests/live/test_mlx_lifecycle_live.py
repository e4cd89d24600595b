"""Hot swaps under live streaming traffic, in a real Hypercorn process (asyncio and trio workers)
with the bundled SmolLM2 and its tools variant: no in-flight request fails, twice over.

Three clients stream short greedy completions in a loop (no ``model`` field: they follow the
resident model) while the model is swapped to the other folder and back.  Requests generating
when a swap starts finish on their model; those arriving meanwhile wait for the new one.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support import LiveServer, copy_project_conf

pytestmark = [pytest.mark.live, pytest.mark.model]

CHAT = "/v1/chat/completions"
BUNDLED = "SmolLM2-135M-Instruct"
TOOLS = "SmolLM2-135M-Instruct-tools"
BODY = {
    "messages": [
        {"role": "system", "content": ""},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0,
    "max_tokens": 4,
    "stream": True,
    "stream_options": {"include_usage": True},
}
CLIENTS = 3


@pytest.fixture(params=["asyncio", "trio"])
def server(request, mlx_models_dir: Path, tmp_path: Path):
    conf = tmp_path / "conf"
    copy_project_conf(conf)
    env = {"DDX_LLM_USE_REAL_MODEL": "1", "DDX_LLM_MODELS_DIR": str(mlx_models_dir)}
    with LiveServer(conf, args=("-k", request.param), env=env) as live:
        deadline = time.monotonic() + 60
        while httpx.get(live.url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.05)
        yield live


@dataclass
class Outcome:
    started: float
    ended: float = 0.0
    status: int = 0
    model: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    done: bool = False
    error: str | None = None
    text: list[str] = field(default_factory=list)


def stream_once(client: httpx.Client) -> Outcome:
    outcome = Outcome(started=time.monotonic())
    try:
        with client.stream("POST", CHAT, json=BODY) as response:
            outcome.status = response.status_code
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    outcome.done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    outcome.model = chunk.get("model", outcome.model)
                    outcome.usage = chunk.get("usage") or outcome.usage
                    for choice in chunk.get("choices", []):
                        outcome.text.append(choice["delta"].get("content") or "")
                        outcome.finish_reason = choice.get("finish_reason") or (
                            outcome.finish_reason
                        )
    except httpx.HTTPError as exc:
        outcome.error = repr(exc)
    outcome.ended = time.monotonic()
    return outcome


def test_two_swaps_under_streaming_traffic_fail_no_request(server):
    outcomes: list[Outcome] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            while not stop.is_set():
                outcomes.append(stream_once(client))

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 90
        while len(outcomes) < count:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.02)

    threads = [threading.Thread(target=client_loop) for _ in range(CLIENTS)]
    swaps = []
    for thread in threads:
        thread.start()
    try:
        wait_for(CLIENTS)
        for target in (TOOLS, BUNDLED):
            time.sleep(0.2)  # into the next round of requests
            started = time.monotonic()
            answer = httpx.post(server.url + "/v1/models/load", json={"model_id": target},
                                timeout=120)  # fmt: skip
            swaps.append((started, time.monotonic(), answer))
            wait_for(len(outcomes) + CLIENTS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    health = httpx.get(server.url + "/health").json()

    assert [(a.status_code, a.json()["swapped"]) for _, _, a in swaps] == [(200, True)] * 2
    failed = [o for o in outcomes if o.error or o.status != 200 or not o.done or not o.usage]
    assert not failed, failed
    assert {o.finish_reason for o in outcomes} <= {"length", "stop"}
    assert {o.model for o in outcomes} == {BUNDLED, TOOLS}
    for started, ended, _ in swaps:  # each swap happened with requests in flight
        assert any(o.started < ended and o.ended > started for o in outcomes)
    assert health["status"] == "ok" and health["model"] == BUNDLED
    assert health["mlx"]["last_unload"]["model"] == TOOLS
    weights_mb = 98.4
    assert health["mlx"]["memory"]["active_mb"] < 1.5 * weights_mb  # one model resident
    print(f"\n{len(outcomes)} streamed requests, none failed; swaps took "
          f"{[round(e - s, 2) for s, e, _ in swaps]} s")  # fmt: skip
