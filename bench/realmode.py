"""Real mode on the bundled SmolLM2: ddx-llm beside ``mlx_lm.server`` and mlx-lm in process.

Both servers serve the same converted folder on loopback, driven by the same httpx clients,
taking turns (A/B within each round).  Greedy decoding throughout, so both sides produce the
same tokens; token counts come from each server's ``usage``.

- decode: one streamed completion; tokens/s from the first to the last content chunk (the
  in-process ``stream_generate`` is timed the same way, from its first to its last token);
- TTFT: a streamed request's time to its first content chunk — *cold* (a prompt no cache
  holds: a fresh nonce opens the system message) and *cached* (the same conversation's second
  turn: its prefix is in the prompt cache of both servers);
- aggregate: ``c`` non-streamed completions (short story prompts) sent at once, total
  completion tokens over the wall time until the last answer — cold prompts (a nonce each) and
  cached (prompts seen before);
- ``/health`` latency while a long prompt is being prefilled and while tokens are decoded;
- swaps (:mod:`swaps`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from common import ROOT, Server, start_server

MODEL = "SmolLM2-135M-Instruct"
STORY = "Write a short story about a {animal} who learns to sail."
ANIMALS = ("cat", "dog", "fox", "owl", "bee", "elk", "yak", "emu")
TRIP = (
    "I am planning a week-long trip through the south of France in early June. I like small "
    "towns, markets, old churches and walking, but I do not drive, so everything has to work by "
    "train or bus. I will arrive in Marseille on a Monday morning and fly home from Nice the next "
    "Sunday evening. Which towns should I stay in, and for how many nights each?"
)


def start_ddx(models_dir: Path, **env: str) -> Server:
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--config",
        str(ROOT / "conf" / "hypercorn.toml"),
        "-w",
        "0",
        "--bind",
        "127.0.0.1:{port}",
        "ddx_llm:app",
    ]
    environment = {
        "DDX_LLM_CONF_DIR": os.environ.get("BENCH_CONF_DIR", str(ROOT / "conf")),
        "DDX_LLM_USE_REAL_MODEL": "1",
        "DDX_LLM_MODELS_DIR": str(models_dir),
        "DDX_LLM_LOG_LEVEL": "WARNING",
        **env,
    }
    return start_server(
        "ddx-real",
        command,
        environment,
        lambda url: httpx.get(url + "/readyz", timeout=2).status_code == 200,
        core=None,
    )


def start_mlx_lm(folder: Path) -> Server:
    command = [
        sys.executable,
        "-m",
        "mlx_lm.server",
        "--model",
        str(folder),
        "--port",
        "{port}",
        "--log-level",
        "WARNING",
    ]
    return start_server(
        "mlx_lm.server",
        command,
        {"HF_HUB_OFFLINE": "1"},
        lambda url: httpx.get(url + "/v1/models", timeout=2).status_code == 200,
        core=None,
    )


def cold(text: str) -> list[dict]:
    """A conversation no prompt cache holds: a fresh nonce opens it."""
    return [
        {"role": "system", "content": f"Session {uuid.uuid4().hex[:12]}."},
        {"role": "user", "content": text},
    ]


def complete(url: str, messages: list[dict], tokens: int, *, stream: bool, on_first=None) -> dict:
    """One greedy completion: text, completion tokens, start, first content and end times.
    ``on_first(time)`` is called as the first content arrives (streams only)."""
    # no "model": each server answers with the model it has loaded (mlx_lm.server would take
    # a registry id for a path or a Hugging Face repo to load)
    body = {"messages": messages, "temperature": 0, "max_tokens": tokens, "stream": stream}
    started = time.perf_counter()
    first = last = None
    if not stream:
        answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
        answer.raise_for_status()
        data = answer.json()
        ended = time.perf_counter()
        return {
            "text": data["choices"][0]["message"]["content"] or "",
            "started": started,
            "tokens": data["usage"]["completion_tokens"],
            "first": ended,
            "ended": ended,
        }
    body["stream_options"] = {"include_usage": True}
    text, usage = [], None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    last = time.perf_counter()
                    if first is None and on_first is not None:
                        on_first(last)
                    first = first or last
                    text.append(choice["delta"]["content"])
    ended = time.perf_counter()
    return {
        "text": "".join(text),
        "tokens": usage["completion_tokens"] if usage else len(text),
        "started": started,
        "first": first or ended,
        "last": last or ended,
        "ended": ended,
    }


def decode_rate(run: dict, tokens: int) -> float:
    return (tokens - 1) / max(run["last"] - run["first"], 1e-9)


def inprocess_decode(model, tokenizer, messages: list[dict], tokens: int) -> tuple[float, str]:
    from mlx_lm import stream_generate

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    times, text = [], []
    for response in stream_generate(model, tokenizer, prompt, max_tokens=tokens):
        times.append(time.perf_counter())
        text.append(response.text)
    return (len(times) - 1) / (times[-1] - times[0]), "".join(text)


def decode(servers: dict[str, str], folder: Path, tokens: int, rounds: int, log=print) -> dict:
    """Decode tokens/s: each server and mlx-lm in process, alternating; medians and whether
    every run produced the same greedy text."""
    from mlx_lm import load

    model, tokenizer = load(str(folder))
    messages = [
        {"role": "system", "content": ""},
        {"role": "user", "content": STORY.format(animal="cat")},
    ]
    runs: dict[str, list[float]] = {name: [] for name in [*servers, "stream_generate"]}
    texts = set()
    for url in servers.values():
        complete(url, messages, 4, stream=True)  # warm-up
    inprocess_decode(model, tokenizer, messages, 4)
    for index in range(rounds):
        for name, url in servers.items():
            run = complete(url, messages, tokens, stream=True)
            runs[name].append(decode_rate(run, tokens))
            texts.add(run["text"])
        rate, text = inprocess_decode(model, tokenizer, messages, tokens)
        runs["stream_generate"].append(rate)
        texts.add(text)
        log(f"  decode round {index}: " + ", ".join(f"{n} {r[-1]:.2f}" for n, r in runs.items()))
    del model, tokenizer
    return {
        "tokens": tokens,
        "runs": runs,
        "same_text": len(texts) == 1,
        "median": {name: statistics.median(r) for name, r in runs.items()},
    }


def ttft(servers: dict[str, str], rounds: int, log=print) -> dict:
    """Time to first token of a cold prompt, and of the same conversation's next turn."""
    found: dict[str, dict[str, list[float]]] = {n: {"cold": [], "cached": []} for n in servers}
    for index in range(rounds):
        for name, url in servers.items():
            turn = cold(TRIP)
            first = complete(url, turn, 16, stream=True)
            found[name]["cold"].append(first["first"] - first["started"])
            turn2 = [
                *turn,
                {"role": "assistant", "content": first["text"]},
                {"role": "user", "content": "And if I only have five days?"},
            ]
            second = complete(url, turn2, 2, stream=True)
            found[name]["cached"].append(second["first"] - second["started"])
        log(
            f"  ttft round {index}: "
            + ", ".join(
                f"{n} cold {v['cold'][-1]:.2f} s cached {v['cached'][-1]:.2f} s"
                for n, v in found.items()
            )
        )
    return {
        n: {k: statistics.median(v) for k, v in kinds.items()} | {"runs": kinds}
        for n, kinds in found.items()
    }


def at_once(url: str, conversations: list[list[dict]], tokens: int) -> dict:
    """Send every conversation at once (non-streamed): total completion tokens / wall time."""
    results: list[dict] = [{} for _ in conversations]
    barrier = threading.Barrier(len(conversations))

    def run(index: int) -> None:
        barrier.wait()
        results[index] = complete(url, conversations[index], tokens, stream=False)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conversations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = min(r["started"] for r in results)
    wall = max(r["ended"] for r in results) - started
    total = sum(r["tokens"] for r in results)
    return {
        "tokens_per_second": total / wall,
        "wall": wall,
        "tokens": total,
        "latencies": [r["ended"] - r["started"] for r in results],
    }


def aggregate(
    servers: dict[str, str], levels: list[int], tokens: int, rounds: int, log=print
) -> dict:
    """Aggregate tokens/s at each concurrency, cold and cached prompts; ratios per round."""
    found: dict = {}
    for url in servers.values():
        at_once(url, [cold(STORY.format(animal=a)) for a in ANIMALS[:2]], 4)  # warm-up
    for kind in ("cold", "cached"):
        for level in levels:
            cached = [cold(STORY.format(animal=a)) for a in ANIMALS[:level]]
            for url in servers.values():
                at_once(url, cached, 2)  # "cached" prompts: each server has seen them
            runs: dict[str, list[dict]] = {name: [] for name in servers}
            for index in range(rounds):
                order = list(servers.items())[:: 1 if index % 2 == 0 else -1]
                for name, url in order:
                    prompts = (
                        [cold(STORY.format(animal=a)) for a in ANIMALS[:level]]
                        if kind == "cold"
                        else cached
                    )
                    runs[name].append(at_once(url, prompts, tokens))
                log(
                    f"  aggregate {kind} c{level} round {index}: "
                    + ", ".join(
                        f"{n} {r[-1]['tokens_per_second']:.2f} tok/s" for n, r in runs.items()
                    )
                )
            found[f"{kind}-c{level}"] = {
                name: {
                    "tokens_per_second": statistics.median(r["tokens_per_second"] for r in rs),
                    "runs": rs,
                }
                for name, rs in runs.items()
            }
    return found


def health_latency(url: str, long_prompt_words: int, tokens: int, log=print) -> dict:
    """``/health`` p50/p99 (ms) while a long prompt is prefilled, then while it decodes."""
    text = " ".join(f"{ANIMALS[i % 8]}{i}" for i in range(long_prompt_words))
    state = {"first": None, "done": False}

    def generate() -> None:
        try:  # the decode phase starts as the first piece arrives, not once the answer is over
            complete(url, cold("Summarize: " + text), tokens, stream=True, on_first=first_piece)
        finally:
            state["done"] = True

    def first_piece(at: float) -> None:
        state["first"] = at

    thread = threading.Thread(target=generate)
    thread.start()
    phases: dict[str, list[float]] = {"prefill": [], "decode": []}
    with httpx.Client(base_url=url, timeout=30) as client:
        while not state["done"]:
            started = time.perf_counter()
            client.get("/health").raise_for_status()
            ended = time.perf_counter()
            phase = (
                "decode" if state["first"] is not None and started > state["first"] else "prefill"
            )
            phases[phase].append((ended - started) * 1000)
            time.sleep(0.02)
    thread.join()
    result = {}
    for phase, values in phases.items():
        values.sort()
        result[phase] = {
            "calls": len(values),
            "p50_ms": statistics.median(values) if values else None,
            "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))] if values else None,
        }
    log(f"  /health during prefill {result['prefill']} decode {result['decode']}")
    return result
