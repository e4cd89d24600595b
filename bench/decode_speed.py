"""Decode speed of the service versus mlx-lm in process, and /health latency while generating.

Runs, in one process and one go, on the bundled SmolLM2 (converted on first use):

1. a real ``hypercorn ddx_llm:app`` in real mode (``DDX_LLM_USE_REAL_MODEL=1``), streaming the
   same greedy completion ``--repeats`` times; decode tokens/s = (tokens - 1) / (time from the
   first to the last content chunk);
2. ``mlx_lm.stream_generate`` in this process on the same prompt, model and token count,
   measured the same way (first to last token), alternating with the service runs;
3. ``/health`` latency (p50 / p99 over ``--health-calls`` calls) while one more streamed
   generation runs.

Both sides must produce the same tokens (greedy decoding): the script checks it.  The service
runs are measured with the server otherwise idle; the in-process runs while the server idles.

    python bench/decode_speed.py [--tokens 48] [--repeats 3] [--worker asyncio|trio]
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
MESSAGES = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "Write a short story about a cat who learns to sail."},
]
MODEL = "SmolLM2-135M-Instruct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(models_dir: Path, worker: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "DDX_LLM_CONF_DIR": str(ROOT / "conf"),
        "DDX_LLM_USE_REAL_MODEL": "1",
        "DDX_LLM_MODELS_DIR": str(models_dir),
        "DDX_LLM_LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "-k",
        worker,
        "--bind",
        f"127.0.0.1:{port}",
        "ddx_llm:app",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).json()["model_state"] == "ready":
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"the server did not get ready:\n{log.read_text()}")


def service_run(url: str, tokens: int) -> tuple[float, int, str]:
    """(decode tokens/s, completion tokens, text) of one streamed greedy completion."""
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "temperature": 0,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    times, text, usage = [], [], None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    times.append(time.perf_counter())
                    text.append(choice["delta"]["content"])
    assert usage is not None and usage["completion_tokens"] == tokens, usage
    # a chunk a token while the client keeps up; the count comes from usage either way
    return (tokens - 1) / (times[-1] - times[0]), tokens, "".join(text)


def inprocess_run(model, tokenizer, tokens: int) -> tuple[float, int, str]:
    from mlx_lm import stream_generate

    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    times, text = [], []
    for response in stream_generate(model, tokenizer, prompt, max_tokens=tokens):
        times.append(time.perf_counter())
        text.append(response.text)
    return (len(times) - 1) / (times[-1] - times[0]), len(times), "".join(text)


def health_during_generation(url: str, tokens: int, calls: int) -> tuple[float, float, int]:
    """p50 and p99 (ms) of /health while a streamed generation runs, and how many of the calls
    saw the worker busy."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (service_run(url, tokens), done.set()))
    thread.start()
    latencies, busy = [], 0
    with httpx.Client(base_url=url) as client:
        while not client.get("/health").json()["mlx"]["busy"]:
            time.sleep(0.005)
        for _ in range(calls):
            started = time.perf_counter()
            body = client.get("/health").json()
            latencies.append((time.perf_counter() - started) * 1000)
            busy += bool(body["mlx"]["busy"])
            time.sleep(0.02)
    thread.join()
    latencies.sort()
    return statistics.median(latencies), latencies[max(0, int(len(latencies) * 0.99) - 1)], busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="tokens per completion")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--health-calls", type=int, default=50)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models" / "cache")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from mlx_lm import load

    from ddx_llm.plugins.mlx_models.bundled import ensure_bundled_model

    folder = ensure_bundled_model(args.models_dir)
    model, tokenizer = load(str(folder))
    log = Path(tempfile.mkstemp(prefix="ddx-bench-", suffix=".log")[1])
    process, url = start_server(args.models_dir, args.worker, log)
    try:
        service_run(url, 4)  # warm-up, both sides
        inprocess_run(model, tokenizer, 4)
        service, inprocess = [], []
        for _ in range(args.repeats):
            service.append(service_run(url, args.tokens))
            inprocess.append(inprocess_run(model, tokenizer, args.tokens))
        texts = {run[2] for run in service + inprocess}
        p50, p99, busy = health_during_generation(url, args.tokens, args.health_calls)
    finally:
        process.terminate()
        process.wait(15)
    service_tps = statistics.median(run[0] for run in service)
    inprocess_tps = statistics.median(run[0] for run in inprocess)
    print(
        f"model {MODEL}, {args.tokens} tokens a completion, {args.repeats} runs each, "
        f"hypercorn -k {args.worker}"
    )
    print(f"same greedy text on both sides: {len(texts) == 1}")
    for label, tps, runs in (
        ("service", service_tps, service),
        ("in process", inprocess_tps, inprocess),
    ):
        print(f"{label:<11} decode tokens/s: {tps:6.2f}  runs {[round(r[0], 2) for r in runs]}")
    print(f"ratio service / in process: {service_tps / inprocess_tps:.3f}")
    print(
        f"/health during a generation: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"({busy}/{args.health_calls} calls while the worker was busy)"
    )


if __name__ == "__main__":
    main()
