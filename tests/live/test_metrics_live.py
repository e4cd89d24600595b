"""Metrics under a real Hypercorn process: one worker on asyncio and trio, and two worker
processes in prometheus-client's multiprocess mode whose counts add up in every scrape."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from support import LiveServer

from ddx_llm.plugins.metrics.exposition import reap_dead_workers

pytestmark = pytest.mark.live

CHAT = "/v1/chat/completions"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
STREAM = {
    "messages": [{"role": "user", "content": "one two three four"}],
    "stream": True,
    "mock": {"scenario": "echo", "token_delay_ms": 5},
}


def value(samples, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def scrape(url: str) -> list:
    # A fresh connection each time, so that with several workers any of them may answer.
    response = httpx.get(url + "/metrics", headers={"connection": "close"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_single_worker_scrape(conf_dir, worker):
    with LiveServer(conf_dir, args=("-k", worker)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            streamed = client.post(CHAT, json=STREAM)
            assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
            assert client.get("/v1/models/does-not-exist").status_code == 404
        samples = scrape(server.url)
    assert value(samples, "ddx_llm_requests_total", route=CHAT, method="POST", status="200") == 1
    assert value(samples, "ddx_llm_requests_total", route="unmatched", status="404") == 1
    assert value(samples, "ddx_llm_request_success_total", finished_reason="stop") == 1
    assert value(samples, "ddx_llm_generation_tokens_total", model_name=MODEL) == 4
    assert value(samples, "ddx_llm_inter_token_latency_seconds_count", model_name=MODEL) == 3
    assert value(samples, "ddx_llm_time_to_first_token_seconds_count", model_name=MODEL) == 1
    assert value(samples, "ddx_llm_model_state", model=MODEL, state="ready") == 1
    assert value(samples, "ddx_llm_requests_in_flight") == 1


DEAD_WORKER = """
from prometheus_client import Gauge
Gauge("ddx_llm_requests_in_flight", "x", multiprocess_mode="livesum").set(5)
"""


def per_worker_chats(folder: Path) -> dict[int, float]:
    """Chat requests counted in each worker's own file, read back with prometheus-client."""
    counts = {}
    for path in glob.glob(str(folder / "counter_*.db")):
        pid = int(Path(path).stem.split("_")[1])
        metrics = MultiProcessCollector.merge([path], accumulate=True)
        samples = [s for metric in metrics for s in metric.samples]
        counts[pid] = value(samples, "ddx_llm_requests_total", route=CHAT, status="200")
    return counts


def test_two_workers_add_up_in_multiprocess_mode(conf_dir, tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    # A process that died without cleaning up leaves a live gauge behind: it must not count.
    subprocess.run([sys.executable, "-c", DEAD_WORKER], env={**os.environ, **env}, check=True)
    assert glob.glob(str(folder / "gauge_livesum_*.db"))

    sent = 0
    chat = {"messages": [{"role": "user", "content": "hi"}]}

    def one_chat(_: int) -> int:
        # No keep-alive: every request is a new connection the kernel hands to either worker.
        response = httpx.post(server.url + CHAT, json=chat, headers={"connection": "close"})
        return response.status_code

    with LiveServer(conf_dir, args=("-w", "2"), env=env) as server:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(20):  # batches until both workers have served some
                assert set(pool.map(one_chat, range(16))) == {200}
                sent += 16
                if len([n for n in per_worker_chats(folder).values() if n]) == 2:
                    break
        per_worker = per_worker_chats(folder)
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        assert sum(per_worker.values()) == sent

        for _ in range(6):  # whichever worker answers, the scrape shows both workers' numbers
            samples = scrape(server.url)
            assert value(samples, "ddx_llm_requests_total", route=CHAT, status="200") == sent
            done = value(samples, "ddx_llm_request_success_total", finished_reason="tool_calls")
            assert done == sent
            assert value(samples, "ddx_llm_e2e_request_latency_seconds_count") == sent
            # livesum gauges: the scrape itself is the only request in flight anywhere (the
            # dead process's 5 was reaped), and both live workers have the model ready.
            assert value(samples, "ddx_llm_requests_in_flight") == 1
            assert value(samples, "ddx_llm_model_state", model=MODEL, state="ready") == 2
            assert value(samples, "ddx_llm_num_requests_running", model_name=MODEL) == 0
        print(f"\n{sent} chats over two workers: {sorted(per_worker.values())}")
    # Each worker marks itself dead when its lifespan ends.  Hypercorn's parent SIGTERMs the
    # workers still shutting down as soon as the first has exited, so a file may outlive its
    # process: the next scrape reaps it.  Either way no live gauge survives; counters stay.
    reap_dead_workers(str(folder))
    assert not glob.glob(str(folder / "gauge_livesum_*.db"))
    assert len(glob.glob(str(folder / "counter_*.db"))) >= 2
