"""The rows of issue 14's table, computed from one run's results, each with its target."""

from __future__ import annotations

ROUTES = {
    "chat": "non-streamed chat req/s",
    "sse": "SSE chunks/s (202-chunk stream)",
    "models": "`GET /v1/models` req/s",
}
TARGETS = {"chat": 0.8, "sse": 0.8, "models": 0.9}
P99_TARGET = 1.3
CPU_TARGET_MS = 0.55
IDLE_STREAM_KB = (72, 61)
"""The issue's figures (ddx-llm, bare): the ratio must not grow."""


def _rows(results: dict, route: str) -> list[dict]:
    return [r for r in results["gateway"]["summary"] if r["route"] == route]


def _ratios(rows: list[dict], worker: str) -> str:
    parts = []
    for protocol in ("h1", "h2c"):
        values = [
            r["ddx/bare"]["rps"]
            for r in rows
            if r["worker"] == worker and r["protocol"] == protocol
        ]
        if values:
            shown = ("n/a" if v is None else f"{v:.2f}" for v in values)
            parts.append(f"{protocol} " + " / ".join(shown))
    return f"{worker}: " + ", ".join(parts)


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def gateway_rows(results: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    p99s = []
    for route, what in ROUTES.items():
        found = _rows(results, route)
        if not found:
            continue
        ratios = [r["ddx/bare"]["rps"] or 0.0 for r in found]  # no answer at all: 0
        p99s += [r["ddx/bare"]["p99"] for r in found if r["ddx/bare"]["p99"] is not None]
        workers = sorted({r["worker"] for r in found})
        measured = "; ".join(_ratios(found, w) for w in workers)
        concurrencies = " / ".join(f"c{c}" for c in sorted({r["concurrency"] for r in found}))
        rows.append(
            (
                f"{what}, all plugins + key, vs a bare Starlette app ({concurrencies})",
                measured,
                f"≥ {TARGETS[route]}",
                met(min(ratios) >= TARGETS[route]),
            )
        )
    if p99s:
        rows.append(
            (
                "p99 latency of the three above",
                f"{min(p99s):.2f} \u2013 {max(p99s):.2f} \u00d7",
                f"≤ {P99_TARGET} \u00d7",
                met(max(p99s) <= P99_TARGET),
            )
        )
    chat = _rows(results, "chat")
    if chat:
        measured, verdicts = [], []
        for worker in sorted({r["worker"] for r in chat}):
            own = [r for r in chat if r["worker"] == worker]
            ours = [r["ddx"]["cpu_ms_per_request"] for r in own if r["ddx"]["cpu_ms_per_request"]]
            bare = [r["bare"]["cpu_ms_per_request"] for r in own if r["bare"]["cpu_ms_per_request"]]
            if not ours:
                continue
            measured.append(
                f"{worker}: {min(ours):.2f}\u2013{max(ours):.2f} ms"
                + (f" (bare {min(bare):.2f}\u2013{max(bare):.2f})" if bare else "")
            )
            verdicts.append(f"{worker}: {met(max(ours) <= CPU_TARGET_MS)}")
        rows.append(
            (
                "CPU per non-streamed request (saturated core; each worker's chat rows)",
                "; ".join(measured),
                f"≤ {CPU_TARGET_MS} ms",
                "; ".join(verdicts),
            )
        )
    return rows


def real_rows(results: dict) -> list[tuple[str, str, str, str]]:
    real = results.get("real")
    if not real:
        return []
    rows = []
    decode = real["decode"]["median"]
    server = decode["ddx-llm"] / decode["mlx_lm.server"]
    inprocess = decode["ddx-llm"] / decode["stream_generate"]
    rows.append(
        (
            "decode tok/s vs `mlx_lm.server` / in-process `stream_generate`",
            f"{server:.2f} / {inprocess:.2f}",
            "keep ≥ 0.97",
            met(min(server, inprocess) >= 0.97),
        )
    )
    parts, worst = [], None
    for level in (2, 4, 8):
        value = real["aggregate"].get(f"cold-c{level}")
        if value is None:
            continue
        ratio = value["ddx-llm"]["tokens_per_second"] / value["mlx_lm.server"]["tokens_per_second"]
        worst = ratio if worst is None else min(worst, ratio)
        parts.append(f"{ratio:.2f} (c{level})")
    if parts:
        rows.append(
            (
                "aggregate tok/s, 2\u20138 concurrent **cold** prompts, non-streamed, vs "
                "`mlx_lm.server`",
                ", ".join(parts),
                "≥ 1.0",
                met(worst >= 1.0),
            )
        )
    return rows


def memory_rows(results: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    swaps = results.get("swaps")
    if swaps:
        rows.append(
            (
                "swap `load_ms` vs bare `mlx_lm.load` of the same folder",
                f"{swaps['ratio']:.2f}",
                "≤ 1.1",
                met(swaps["ratio"] <= 1.1),
            )
        )
        rows.append(
            (
                f"RSS after {len(swaps['swap_ms'])} swaps vs a fresh start with that model",
                f"{swaps['rss_ratio']:.2f}",
                "keep ≤ 1.1",
                met(swaps["rss_ratio"] <= 1.1),
            )
        )
    streams = results.get("streams")
    if streams:
        ours, bare = streams["ddx"]["kb_per_stream"], streams["bare"]["kb_per_stream"]
        limit = IDLE_STREAM_KB[0] / IDLE_STREAM_KB[1]
        rows.append(
            (
                "memory per idle stream vs the bare app",
                f"{ours:.0f} vs {bare:.0f} KB",
                f"keep (≤ {limit:.2f} \u00d7 the bare app's, as 72 vs 61 KB)",
                met(ours <= limit * bare),
            )
        )
    return rows


def issue_rows(results: dict) -> list[tuple[str, str, str, str]]:
    rows = gateway_rows(results) if "gateway" in results else []
    return rows + real_rows(results) + memory_rows(results)
