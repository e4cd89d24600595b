"""``ddx-llm serve -w 2`` on one host (deploy/README.md, "Several workers on one host"): the
vLLM-named series an inference gateway reads are the totals over both workers, whichever
worker answers the scrape; each worker reports its own KV-cache slots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, free_port, write_conf

pytestmark = [pytest.mark.anyio, pytest.mark.live]

STREAMS = 4


def samples(text: str, name: str) -> list[float]:
    return [
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    ]


async def test_two_workers_report_their_totals(conf_dir: Path, tmp_path: Path, anyio_backend):
    write_conf(conf_dir, {"core": {"max_running": 8}, "metrics": {"vllm_names": True}})
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DDX_LLM_CONF_DIR": str(conf_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    hypercorn = str(conf_dir / "hypercorn.toml")
    command = [sys.executable, "-m", "ddx_llm.cli", "serve", "--config", hypercorn,
               "-b", f"127.0.0.1:{port}", "-w", "2"]  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    server = await anyio.open_process(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    body = {
        "stream": True,
        "mock": {"scenario": "echo", "token_delay_ms": 200},
        "messages": [{"role": "user", "content": "one two three four five six seven eight"}],
    }
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            with anyio.fail_after(60):
                while True:
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.1)
            async with anyio.create_task_group() as tg:
                for _ in range(STREAMS):  # separate connections: the kernel spreads them
                    tg.start_soon(stream, url, body)
                with anyio.fail_after(10):
                    while True:
                        text = (await client.get("/metrics")).text
                        # one series, the total over both workers; the per-model series
                        # agrees (read a moment apart in one scrape: a stream may start between)
                        total = samples(text, "vllm:num_requests_running")
                        per_model = sum(samples(text, "ddx_llm_num_requests_running"))
                        if total == [STREAMS] and per_model == STREAMS:
                            break
                        await anyio.sleep(0.02)
                # the KV-cache figure is the answering worker's own share of its 8 slots
                (kv,) = samples(text, "vllm:kv_cache_usage_perc")
                assert kv in {n / 8 for n in range(STREAMS + 1)}
            after = (await client.get("/metrics")).text
            assert samples(after, "vllm:num_requests_running") == [0]
    finally:
        server.terminate()
        with anyio.fail_after(30):
            await server.wait()
        log.close()


async def stream(url: str, body: dict) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
