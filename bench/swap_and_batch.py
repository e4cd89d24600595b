"""Swaps, memory, batching throughput and the prompt cache: ddx-llm beside mlx-lm, in one run.

On the bundled SmolLM2 (converted on first use) and its tools variant (same weights, another
folder), side by side:

1. swap ``load_ms`` (``POST /v1/models/load``, which includes draining and unloading the old
   model) versus a bare ``mlx_lm.load`` of the same folder in this process;
2. memory around a swap, from ``/health`` → ``mlx``: the old model resident, dropped, released
   (MLX active and cache memory, process RSS), and the new model resident;
3. aggregate decode throughput at concurrency 1, 2 and 4 — N streamed greedy completions at once,
   total completion tokens / wall time — for ddx-llm and for ``python -m mlx_lm.server`` on the
   same folder, driven by the same httpx client, alternating between the two;
4. time to first token of a conversation's second turn, with the prompt cache and without it
   (a second ddx-llm server with ``DDX_LLM_MLX_PROMPT_CACHE_ENTRIES=0``).

    python bench/swap_and_batch.py [--tokens 24] [--rounds 2] [--swaps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BUNDLED, TOOLS = "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct-tools"
ANIMALS = ("cat", "dog", "fox", "owl")
LONG_TURN = (
    "I am planning a week-long trip through the south of France in early June. I like small "
    "towns, markets, old churches and walking, but I do not drive, so everything has to work by "
    "train or bus. I will arrive in Marseille on a Monday morning and fly home from Nice the next "
    "Sunday evening. Which towns should I stay in, and for how many nights each?"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(url: str, process: subprocess.Popen, log: Path, ready) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited:\n{log.read_text()}")
        try:
            if ready(httpx.get(url, timeout=2)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not get ready:\n{log.read_text()}")


def start(command: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def start_ddx(models_dir: Path, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = start(
        [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "ddx_llm:app"],
        {
            "DDX_LLM_CONF_DIR": str(ROOT / "conf"),
            "DDX_LLM_USE_REAL_MODEL": "1",
            "DDX_LLM_MODELS_DIR": str(models_dir),
            "DDX_LLM_LOG_LEVEL": "WARNING",
            **env,
        },
        "ddx",
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(url + "/readyz", process, process.log, lambda r: r.status_code == 200)
    return process, url


def start_mlx_lm(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = start(
        [
            sys.executable,
            "-m",
            "mlx_lm.server",
            "--model",
            str(folder),
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ],
        {"HF_HUB_OFFLINE": "1"},
        "mlx-lm",
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(url + "/v1/models", process, process.log, lambda r: r.status_code == 200)
    return process, url


def stream(url: str, messages: list[dict], tokens: int) -> dict:
    """One streamed greedy completion: text, completion tokens, TTFT and end time."""
    body = {
        "messages": messages,
        "temperature": 0,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started, first, text, usage = time.perf_counter(), None, [], None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
                    text.append(choice["delta"]["content"])
    ended = time.perf_counter()
    ttft = (first or ended) - started
    return {
        "text": "".join(text),
        "tokens": usage["completion_tokens"],
        "ttft": ttft,
        "ended": ended,
    }


def story(animal: str) -> list[dict]:
    question = f"Write a short story about a {animal} who learns to sail."
    return [{"role": "system", "content": ""}, {"role": "user", "content": question}]


def aggregate(url: str, concurrency: int, tokens: int) -> tuple[float, list[str]]:
    """Total completion tokens / wall time of ``concurrency`` simultaneous completions."""
    results: list[dict] = [{}] * concurrency

    def run(index: int) -> None:
        results[index] = stream(url, story(ANIMALS[index]), tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = max(r["ended"] for r in results) - started
    return sum(r["tokens"] for r in results) / wall, [r["text"] for r in results]


def health(url: str) -> dict:
    return httpx.get(url + "/health").json()


def mb(figures: dict) -> str:
    return (
        f"active {figures['active_mb']:6.1f}  cache {figures['cache_mb']:5.1f}  "
        f"rss {figures['rss_mb']:6.1f} MB"
    )


def bench_swaps(url: str, folder: Path, swaps: int) -> None:
    from mlx_lm import load

    swap_ms, bare_ms = [], []
    load(str(folder))  # warm the imports on this side too
    for index in range(swaps):
        target = TOOLS if index % 2 == 0 else BUNDLED
        answer = httpx.post(url + "/v1/models/load", json={"model_id": target}, timeout=300)
        swap_ms.append(answer.json()["load_ms"])
        started = time.perf_counter()
        model, tokenizer = load(str(folder))
        bare_ms.append((time.perf_counter() - started) * 1000)
        del model, tokenizer
    swap, bare = statistics.median(swap_ms), statistics.median(bare_ms)
    print(
        f"\n1. load: swap (drain + unload + load) median {swap:.0f} ms {swap_ms}; bare "
        f"mlx_lm.load median {bare:.0f} ms; ratio swap / bare {swap / bare:.2f}"
    )
    mlx = health(url)["mlx"]
    unload = mlx["last_unload"]
    print(
        f"2. memory around the last swap (unloaded {unload['model']} in "
        f"{unload['unload_ms']:.0f} ms, the rest of the swap is the load):"
    )
    for label, figures in (
        ("old model resident", unload["resident"]),
        ("old model dropped", unload["dropped"]),
        ("memory released", unload["released"]),
        ("new model resident", mlx["memory"]),
    ):
        print(f"   {label:<20} {mb(figures)}")


def bench_throughput(ddx: str, mlx_lm: str, tokens: int, rounds: int) -> None:
    print(f"3. aggregate decode throughput, {tokens} tokens per completion, median of {rounds}:")
    for url in (ddx, mlx_lm):
        aggregate(url, 4, 4)  # warm-up: compiled kernels, prompt caches
    for concurrency in (1, 2, 4):
        runs: dict[str, list[float]] = {"ddx-llm": [], "mlx_lm.server": []}
        texts = {}
        for _ in range(rounds):
            for name, url in (("ddx-llm", ddx), ("mlx_lm.server", mlx_lm)):
                tps, texts[name] = aggregate(url, concurrency, tokens)
                runs[name].append(tps)
        ours, theirs = (statistics.median(runs[n]) for n in ("ddx-llm", "mlx_lm.server"))
        print(
            f"   concurrency {concurrency}: ddx-llm {ours:6.2f} tok/s  mlx_lm.server "
            f"{theirs:6.2f} tok/s  ratio {ours / theirs:.2f}  same greedy text: "
            f"{texts['ddx-llm'] == texts['mlx_lm.server']}"
        )


def second_turn_ttft(url: str, conversations: int) -> tuple[float, int]:
    ttfts = []
    for index in range(conversations):
        turn1 = [
            {"role": "system", "content": ""},
            {"role": "user", "content": f"({index + 1}) {LONG_TURN}"},
        ]
        answer = stream(url, turn1, 16)["text"]
        turn2 = [
            *turn1,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And if I only have five days?"},
        ]
        ttfts.append(stream(url, turn2, 2)["ttft"])
    return statistics.median(ttfts), health(url)["mlx"]["prompt_tokens_processed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=24, help="tokens per completion")
    parser.add_argument("--rounds", type=int, default=2, help="repeats per concurrency level")
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models" / "cache")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from ddx_llm.plugins.mlx_models.bundled import ensure_bundled_model, ensure_tools_variant

    folder = ensure_bundled_model(args.models_dir)
    ensure_tools_variant(args.models_dir)
    print(f"model {BUNDLED} ({folder}), 4 sequences at most in one batch")
    servers = []
    try:
        ddx, ddx_url = start_ddx(args.models_dir, DDX_LLM_MAX_RUNNING="4")
        servers.append(ddx)
        bench_swaps(ddx_url, folder, args.swaps)
        httpx.post(ddx_url + "/v1/models/load", json={"model_id": BUNDLED}, timeout=300)
        mlx_lm, mlx_lm_url = start_mlx_lm(folder)
        servers.append(mlx_lm)
        bench_throughput(ddx_url, mlx_lm_url, args.tokens, args.rounds)
        mlx_lm.terminate()
        no_cache, no_cache_url = start_ddx(args.models_dir, DDX_LLM_MLX_PROMPT_CACHE_ENTRIES="0")
        servers.append(no_cache)
        httpx.post(ddx_url + "/v1/models/load", json={"model_id": TOOLS}, timeout=300)
        httpx.post(ddx_url + "/v1/models/load", json={"model_id": BUNDLED}, timeout=300)
        before = health(ddx_url)["mlx"].get("prompt_tokens_processed", 0)
        cached, processed = second_turn_ttft(ddx_url, args.conversations)
        uncached, processed_without = second_turn_ttft(no_cache_url, args.conversations)
        print(
            f"4. second-turn TTFT, median of {args.conversations} conversations: with the "
            f"prompt cache {cached:.2f} s, without {uncached:.2f} s, ratio "
            f"{uncached / cached:.1f}x; prompt tokens processed {processed - before} versus "
            f"{processed_without}"
        )
    finally:
        for process in servers:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
