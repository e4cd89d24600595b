"""Swaps and memory: ``POST /v1/models/load`` beside a bare ``mlx_lm.load`` of the same folder,
the process's memory after several swaps beside a fresh start, and the memory an idle stream
costs (ddx-llm beside the bare app).

- swap: ``load_ms`` as the service reports it (drain, unload, load) for a swap between the
  bundled SmolLM2 and its tools variant (the same weights in another folder), and the time of
  ``mlx_lm.load`` of the folder swapped to, in this process (imports warm, the previous model
  dropped and MLX's cache cleared first), alternating;
- RSS: ``/health`` → ``mlx.memory.rss_mb`` after ``swaps`` swaps, and of a fresh server that
  started with the model the swaps ended on;
- idle streams: ``n`` SSE streams held open (mock, one piece then a long pause) on ddx-llm and
  on the bare app: the server's RSS growth divided by ``n``.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path

import anyio
import httpx
from common import Server

BUNDLED, TOOLS = "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct-tools"


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for {pid}")


def swap_times(server: Server, folders: dict[str, Path], swaps: int, log=print) -> dict:
    """Swap ``swaps`` times between the two models; after each, a bare load of that folder."""
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(folders[BUNDLED]))  # warm the imports on this side too
    del model, tokenizer
    swap_ms, bare_ms = [], []
    for index in range(swaps):
        target = TOOLS if index % 2 == 0 else BUNDLED
        answer = httpx.post(server.url + "/v1/models/load", json={"model_id": target}, timeout=600)
        answer.raise_for_status()
        swap_ms.append(answer.json()["load_ms"])
        gc.collect()
        mx.clear_cache()
        started = time.perf_counter()
        model, tokenizer = load(str(folders[target]))
        bare_ms.append((time.perf_counter() - started) * 1000)
        del model, tokenizer
        log(f"  swap {index} to {target}: load_ms {swap_ms[-1]:.0f}, bare {bare_ms[-1]:.0f} ms")
    ratios = [s / b for s, b in zip(swap_ms, bare_ms, strict=True)]
    health = httpx.get(server.url + "/health").json()
    return {
        "swap_ms": swap_ms,
        "bare_ms": bare_ms,
        "ratio": statistics.median(ratios),
        "last_unload": health.get("mlx", {}).get("last_unload"),
        "rss_mb": rss_mb(server.process.pid),
        "ended_on": target,
    }


async def _hold_streams(url: str, n: int, body: dict, headers: dict, hold: float) -> int:
    """Open ``n`` streams (their headers are in; the first piece is 10 s away), hold them
    ``hold`` s."""
    opened = 0
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        ready = anyio.Event()

        async def one() -> None:
            nonlocal opened
            request = client.build_request(
                "POST", "/v1/chat/completions", json=body, headers=headers
            )
            response = await client.send(request, stream=True)  # the headers are in
            try:
                response.raise_for_status()
                opened += 1
                if opened == n:
                    ready.set()
                await anyio.sleep(hold + 30)
            finally:
                await response.aclose()

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
            with anyio.fail_after(60):
                await ready.wait()
            await anyio.sleep(hold)
            tg.cancel_scope.cancel()
    return opened


def idle_stream_memory(server: Server, n: int, headers: dict, hold: float = 2.0) -> dict:
    """RSS growth per idle stream: ``n`` echo streams whose first piece is 10 s away (the
    mock's longest delay; the bare app waits as long)."""
    body = {
        "stream": True,
        "mock": {"scenario": "echo", "token_delay_ms": 10_000},
        "messages": [{"role": "user", "content": "one two"}],
    }
    before = rss_mb(server.process.pid)
    peak = {"rss": before}

    async def measure() -> int:
        async with anyio.create_task_group() as tg:
            result = []

            async def hold_them() -> None:
                result.append(await _hold_streams(server.url, n, body, headers, hold))

            tg.start_soon(hold_them)
            while not result:
                peak["rss"] = max(peak["rss"], rss_mb(server.process.pid))
                await anyio.sleep(0.2)
        return result[0]

    opened = anyio.run(measure)
    return {
        "streams": opened,
        "rss_before_mb": before,
        "rss_peak_mb": peak["rss"],
        "kb_per_stream": (peak["rss"] - before) * 1000 / max(opened, 1),
    }


def fresh_rss(server: Server) -> float:
    """RSS of a server that has just loaded its model (its first answer given)."""
    httpx.get(server.url + "/health").raise_for_status()
    return rss_mb(server.process.pid)


def summary(found: dict) -> str:
    return json.dumps(found, indent=1, default=str)
