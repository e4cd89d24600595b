"""Constrained decoding (llguidance) beside free decoding, on the bundled SmolLM2, in one run.

1. Decode speed through the service: a real ``hypercorn ddx_llm:app`` in real mode streams the
   same greedy completion of the same prompt and length, free and constrained to a JSON schema
   (``{"story": <a string of at least 4000 characters>}``, so both reach ``--tokens``),
   alternating ``--repeats`` times.  Decode tokens/s = (tokens - 1) / (time from the first to
   the last content chunk); the target is constrained >= 0.9 x free.  Then the same side by side
   inside one batch: a free completion next to a constrained one, versus next to another free one.
2. Per-token mask time: in the service (``/health`` → ``mlx.structured.mask_ms``: feeding the
   token to the matcher and computing the mask, the engine's mean over every constrained token),
   and in process for one :class:`~ddx_llm.plugins.mlx.constrained.GrammarProcessor` call per
   token of a real instance (mask, unpacking, ``mx.where``, evaluated), mean / p50 / p99.
3. Grammar compile time for a large schema (100 properties, ``$defs``, enums, patterns, arrays,
   ``anyOf``): the llguidance tokenizer (once per model), then
   :meth:`~ddx_llm.plugins.mlx.structured.StructuredDecoding.compile` cold and cached, and the
   per-request copy of the compiled grammar.

``llguidance.mlx`` applies masks with a Metal kernel, unavailable on Linux CPU (``mlx[cpu]``):
there the numpy helpers and ``mx.where`` are the only path, and this script measures that one.

    python bench/structured_decode.py [--tokens 48] [--repeats 3] [--no-batched]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from decode_speed import MESSAGES, MODEL, start_server  # noqa: E402

STORY_SCHEMA = {
    "type": "object",
    "properties": {"story": {"type": "string", "minLength": 4000}},
    "required": ["story"],
    "additionalProperties": False,
}
STORY_FORMAT = {"type": "json_schema", "json_schema": {"name": "story", "schema": STORY_SCHEMA}}


def stream_run(url: str, tokens: int, constrained: bool) -> dict:
    """One streamed greedy completion: decode tokens/s, completion tokens, text."""
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "temperature": 0,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if constrained:
        body["response_format"] = STORY_FORMAT
    times, text, usage = [], [], None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    times.append(time.perf_counter())
                    text.append(choice["delta"]["content"])
    assert usage is not None and usage["completion_tokens"] == tokens, usage
    return {"tps": (tokens - 1) / (times[-1] - times[0]), "text": "".join(text)}


def side_by_side(url: str, tokens: int, neighbour_constrained: bool) -> tuple[float, float]:
    """A free completion and a neighbour (constrained or free) at once: their tokens/s."""
    results: list[dict] = [{}, {}]

    def run(index: int, constrained: bool) -> None:
        results[index] = stream_run(url, tokens, constrained)

    threads = [
        threading.Thread(target=run, args=(0, False)),
        threading.Thread(target=run, args=(1, neighbour_constrained)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results[0]["tps"], results[1]["tps"]


def large_schema(properties: int = 100) -> dict:
    """A large schema mixing what clients send: nested $defs, enums, patterns, bounds, arrays."""
    defs = {
        f"item{i}": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
                "kind": {"enum": [f"kind_{i}_{k}" for k in range(30)]},
                "count": {"type": "integer", "minimum": 0, "maximum": 10_000},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 40}]},
            },
            "required": ["id", "kind", "count"],
            "additionalProperties": False,
        }
        for i in range(10)
    }
    kinds = [
        {"type": "string", "minLength": 1, "maxLength": 64},
        {"type": "integer", "minimum": -1000, "maximum": 1000},
        {"type": "number", "minimum": 0},
        {"type": "boolean"},
        {"$ref": "#/$defs/item{}"},
        {"type": "array", "items": {"$ref": "#/$defs/item{}"}, "minItems": 1, "maxItems": 3},
        {"type": "string", "format": "date"},
        {"enum": ["red", "green", "blue", "cyan", "magenta", "yellow"]},
    ]
    props = {}
    for i in range(properties):
        kind = json.loads(json.dumps(kinds[i % len(kinds)]).replace("item{}", f"item{i % 10}"))
        props[f"field_{i:03d}"] = kind
    return {
        "$defs": defs,
        "type": "object",
        "properties": props,
        "required": list(props)[: properties // 2],
        "additionalProperties": False,
    }


def compile_figures(tokenizer) -> dict:
    from ddx_llm.plugins.mlx.structured import StructuredDecoding
    from ddx_llm.plugins.structured_output.requested import constraint
    from ddx_llm.schemas import ChatCompletionRequest

    schema = large_schema()
    request = ChatCompletionRequest(
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "big", "schema": schema}},
    )
    structured = StructuredDecoding(tokenizer, MODEL)
    started = time.perf_counter()
    structured.ll_tokenizer()
    ll_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = structured.compile(constraint(request), request, False)
    cold_s = time.perf_counter() - started
    cached = []
    for _ in range(20):
        started = time.perf_counter()
        structured.compile(constraint(request), request, False)
        cached.append(time.perf_counter() - started)
    copies = []
    for _ in range(20):
        started = time.perf_counter()
        compiled.processor()
        copies.append(time.perf_counter() - started)
    return {
        "schema_bytes": len(json.dumps(schema)),
        "ll_tokenizer_s": ll_s,
        "cold_s": cold_s,
        "cached_ms": statistics.median(cached) * 1000,
        "copy_ms": statistics.median(copies) * 1000,
    }


def mask_figures(tokenizer) -> dict:
    """Per-token cost of one GrammarProcessor call (mask + unpack + mx.where, evaluated) over a
    real instance of a mid-sized schema, token by token."""
    import mlx.core as mx

    from ddx_llm.plugins.mlx.structured import StructuredDecoding
    from ddx_llm.plugins.structured_output.requested import constraint
    from ddx_llm.schemas import ChatCompletionRequest

    schema = large_schema(12)
    instance = {
        f"field_{i:03d}": v
        for i, v in enumerate(
            [
                "Paris",
                12,
                3.5,
                True,
                {"id": "AB-1234", "kind": "kind_4_3", "count": 7, "tags": ["a"], "note": None},
                [{"id": "CD-0001", "kind": "kind_5_0", "count": 0}],
                "2024-06-01",
                "green",
                "Lyon",
                -4,
                0.25,
                False,
            ]
        )
    }
    text = json.dumps(instance, separators=(",", ":"))
    request = ChatCompletionRequest(
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "m", "schema": schema}},
    )
    structured = StructuredDecoding(tokenizer, MODEL)
    processor = structured.compile(constraint(request), request, False).processor()
    tokens = [*tokenizer.encode(text, add_special_tokens=False), structured.end_tokens[0]]
    context = [1, 2, 3]  # the prompt: never consumed (the first call feeds nothing)
    logits = mx.zeros((1, len(tokenizer)))
    mx.eval(logits)
    times = []
    for token in tokens:
        started = time.perf_counter()
        mx.eval(processor(mx.array(context), logits))
        times.append(time.perf_counter() - started)
        context.append(token)
    mx.eval(processor(mx.array(context), logits))  # feeds the end token
    assert processor.error is None and processor.matcher.is_stopped(), processor.error
    times.sort()
    return {
        "tokens": len(tokens),
        "mean_ms": statistics.fmean(times) * 1000,
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[max(0, int(len(times) * 0.99) - 1)] * 1000,
        "matcher_ms": processor.mask_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="tokens per completion")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-batched", action="store_true", help="skip the side-by-side batch")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models" / "cache")
    args = parser.parse_args()

    from mlx_lm.utils import load_tokenizer

    from ddx_llm.plugins.mlx_models.bundled import ensure_bundled_model

    tokenizer = load_tokenizer(ensure_bundled_model(args.models_dir))
    compiled = compile_figures(tokenizer)
    masks = mask_figures(tokenizer)

    log = Path(tempfile.mkstemp(prefix="ddx-bench-", suffix=".log")[1])
    process, url = start_server(args.models_dir, "asyncio", log)
    try:
        stream_run(url, 4, False)  # warm-up, both kinds
        stream_run(url, 4, True)
        free, constrained = [], []
        for _ in range(args.repeats):
            free.append(stream_run(url, args.tokens, False))
            constrained.append(stream_run(url, args.tokens, True))
        batched = None
        if not args.no_batched:
            batched = (side_by_side(url, args.tokens, False), side_by_side(url, args.tokens, True))
        structured = httpx.get(url + "/health").json()["mlx"]["structured"]
    finally:
        process.terminate()
        process.wait(15)
    free_tps = statistics.median(r["tps"] for r in free)
    constrained_tps = statistics.median(r["tps"] for r in constrained)
    assert all(r["text"].startswith('{"story":"') for r in constrained), constrained[0]["text"]

    print(f"model {MODEL}, {args.tokens} tokens a completion, {args.repeats} runs each, greedy")
    runs = [round(r["tps"], 2) for r in free]
    print(f"free        decode tokens/s: {free_tps:6.2f}  runs {runs}")
    print(
        f"constrained decode tokens/s: {constrained_tps:6.2f}  runs "
        f"{[round(r['tps'], 2) for r in constrained]}"
    )
    print(f"ratio constrained / free: {constrained_tps / free_tps:.3f} (target >= 0.9)")
    if batched:
        (free_a, free_b), (free_c, cons) = batched
        print(f"batch of 2, free + free:        {free_a:5.2f} + {free_b:5.2f} tokens/s")
        print(f"batch of 2, free + constrained: {free_c:5.2f} + {cons:5.2f} tokens/s")
    print(
        f"service mask time per token (matcher + mask): {structured['mask_ms']} ms "
        f"over {structured['sequences_done']} constrained completions"
    )
    print(
        f"in process, per token over {masks['tokens']} tokens of a 12-field instance: "
        f"processor call {masks['mean_ms']:.3f} ms mean, {masks['p50_ms']:.3f} p50, "
        f"{masks['p99_ms']:.3f} p99 (matcher + mask alone {masks['matcher_ms']:.3f} ms)"
    )
    print(
        f"large schema ({compiled['schema_bytes']} bytes of JSON): llguidance tokenizer "
        f"{compiled['ll_tokenizer_s']:.2f} s once per model; compile cold "
        f"{compiled['cold_s'] * 1000:.0f} ms, cached {compiled['cached_ms']:.3f} ms, "
        f"per-request copy {compiled['copy_ms']:.3f} ms"
    )
    print("llguidance.mlx (Metal kernel): not measurable here (no Metal on Linux CPU)")


if __name__ == "__main__":
    main()
