"""``BENCHMARKS.md`` and the charts, from ``bench/results/results.json``.

    python bench/report.py            # rewrite the report from the last results

The first table is the issue's (every row from the one run in ``results.json``); the detail
tables and charts follow; ``bench/notes.md`` (what was changed and why a row misses its target,
written by hand) is included as it is.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from targets import issue_rows  # noqa: E402


def fmt(value: float | None, digits: int = 2) -> str:
    return "\u2013" if value is None else f"{value:.{digits}f}"


def machine_section(results: dict) -> list[str]:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    pinned = (
        "servers on core 0, load generators on core 1 (`taskset`)"
        if m["pinned"]
        else "not pinned (taskset missing or one core)"
    )
    return [
        "## Machine, versions, command",
        "",
        f"- {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; {m['platform']}; "
        f"Python {m['python']}",
        f"- {versions}",
        f"- gateway: {pinned}; real mode: unpinned (MLX uses both cores)"
        + ("; app: in process, unpinned" if "app" in results else ""),
        f"- run {results['started']}, `{results['command']}`"
        f"{' (quick)' if results.get('quick') else ''}, {results['seconds'] / 60:.0f} min",
        "",
    ]


def gateway_section(results: dict) -> list[str]:
    if "gateway" not in results:
        return []
    lines = [
        "## Gateway: ddx-llm beside a bare Starlette app, same bytes, same Hypercorn",
        "",
        "Req/s (SSE: streams/s; one stream is 202 chunks), p99 latency, server CPU per "
        "request (from `/proc`, the server's core saturated); `ddx` = all plugins and an API "
        "key, `off` = plugins disabled; ratios are medians of per-round ratios.",
        "",
        "| worker | route | proto | c | bare req/s | ddx req/s | off req/s | ddx/bare | "
        "off/bare | p99 bare ms | p99 ddx ms | p99 ratio | CPU/req bare ms | CPU/req ddx ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["gateway"]["summary"]:
        bare, ddx, off = row["bare"], row["ddx"], row["ddx-off"]
        lines.append(
            f"| {row['worker']} | {row['route']} | {row['protocol']} | {row['concurrency']} | "
            f"{bare['rps']:.0f} | {ddx['rps']:.0f} | {off['rps']:.0f} | "
            f"**{fmt(row['ddx/bare']['rps'])}** | {fmt(row['ddx-off/bare']['rps'])} | "
            f"{fmt(bare['p99_ms'], 1)} | {fmt(ddx['p99_ms'], 1)} | {fmt(row['ddx/bare']['p99'])} | "
            f"{fmt(bare['cpu_ms_per_request'], 3)} | {fmt(ddx['cpu_ms_per_request'], 3)} |"
        )
    errors = sum(r["errors"] for r in results["gateway"]["rows"])
    failed = [r for r in results["gateway"]["rows"] if r.get("failed")]
    lines += ["", f"Errors (non-2xx or socket) over every run: {errors}."]
    if failed:
        lines.append(
            f"Runs that got no answer at all (0 req/s): {len(failed)} — "
            + ", ".join(
                f"{r['worker']} {r['route']} {r['protocol']} c{r['concurrency']} "
                f"r{r['round']} {r['server']}"
                for r in failed
            )
            + "."
        )
    lines.append("")
    profile = results["gateway"].get("profile") or {}
    if profile:
        names = [k for k, v in profile.items() if "areas" in v]
        if names:
            lines += [
                "### Where the saturated server's CPU goes (py-spy, share of samples)",
                "",
                "| area | " + " | ".join(names) + " |",
                "|---|" + "---|" * len(names),
            ]
            areas = list(profile[names[0]]["areas"])
            for area in areas:
                shares = [profile[n]["areas"].get(area, 0) for n in names]
                if any(shares):
                    lines.append(
                        f"| {area} | " + " | ".join(f"{s * 100:.1f} %" for s in shares) + " |"
                    )
            lines += ["", "Busiest functions (own time), ddx-llm, non-streamed chat:", ""]
            for name, share in (profile.get("ddx-chat") or {}).get("own", [])[:12]:
                lines.append(f"- {share * 100:.1f} % `{name}`")
            lines.append("")
    return lines


def app_section(results: dict) -> list[str]:
    """The app part: µs per request in process, per backend and route; each plugin's cost."""
    app = results.get("app")
    if not app:
        return []
    timing = app["timing"]
    lines = [
        "## The app alone: µs per request in process, no server",
        "",
        "The ASGI app called directly (a scope, a `receive` with the body, a `send` that counts), "
        "sequential requests, each variant in a process of its own; the median of "
        f"{timing['batches']} timed batches of about {timing['batch_seconds']} s after a "
        f"{timing['warmup_seconds']} s warm-up.  These figures exclude the server: Hypercorn's "
        "own per-request cost is what the gateway part adds on top.  `bare` = the bare Starlette "
        "app sending ddx-llm's bytes, `off` = plugins disabled, `ddx` = all plugins and an API "
        "key; spread = (slowest \u2212 fastest batch) / median, the widest of the three.",
        "",
        "| backend | route | bare µs | off µs | ddx µs | ddx/bare | spread |",
        "|---|---|---|---|---|---|---|",
    ]
    spreads = {(r["backend"], r["route"], r["variant"]): r["spread"] for r in app["runs"]}
    for row in app["summary"]:
        spread = max(
            spreads.get((row["backend"], row["route"], v), 0.0) for v in ("bare", "off", "ddx")
        )
        lines.append(
            f"| {row['backend']} | {row['route']} | {fmt(row['bare'], 1)} | {fmt(row['off'], 1)} "
            f"| {fmt(row['ddx'], 1)} | **{fmt(row['ddx/bare'])}** | {spread * 100:.0f} % |"
        )
    lines += drift(app)
    costs = app["plugin_cost_us"]
    if costs:
        routes = list(next(iter(costs.values())))
        lines += [
            "",
            "Cost of each plugin (asyncio): µs/request = ddx \u2212 ddx without that plugin; a "
            "difference within the runs' spread (or below zero) is noise.",
            "",
            "| plugin | " + " | ".join(f"{r} µs" for r in routes) + " |",
            "|---|" + "---|" * len(routes),
        ]
        for plugin, found in costs.items():
            lines.append(f"| {plugin} | " + " | ".join(fmt(found[r], 1) for r in routes) + " |")
        total = [sum(c[r] or 0.0 for c in costs.values()) for r in routes]
        together = {r["route"]: difference(r["ddx"], r["off"]) for r in asyncio_rows(app)}
        lines.append("| sum of the above | " + " | ".join(fmt(t, 1) for t in total) + " |")
        lines.append(
            "| all together (ddx \u2212 off) | "
            + " | ".join(fmt(together.get(r), 1) for r in routes)
            + " |"
        )
    lines.append("")
    return lines


def asyncio_rows(app: dict) -> list[dict]:
    return [r for r in app["summary"] if r["backend"] == "asyncio"]


def drift(app: dict) -> list[str]:
    """ddx on asyncio, measured first and again last: how far the machine drifted meanwhile."""
    runs = [r for r in app["runs"] if r["backend"] == "asyncio" and r["variant"] == "ddx"]
    routes = dict.fromkeys(r["route"] for r in runs)
    pairs = {route: [r["us"] for r in runs if r["route"] == route] for route in routes}
    shown = [
        f"{route} {v[0]:.1f} \u2192 {v[-1]:.1f} µs" for route, v in pairs.items() if len(v) > 1
    ]
    if not shown:
        return []
    return [
        "",
        "ddx on asyncio, measured first and again last (the drift): " + ", ".join(shown) + ".",
    ]


def difference(ours: float | None, other: float | None) -> float | None:
    return None if ours is None or other is None else ours - other


def real_section(results: dict) -> list[str]:
    real = results.get("real")
    if not real:
        return []
    decode = real["decode"]
    lines = [
        "## Real mode: the bundled SmolLM2-135M on CPU",
        "",
        f"Decode ({decode['tokens']} greedy tokens, median of {len(decode['runs']['ddx-llm'])}; "
        f"same text everywhere: {decode['same_text']}):",
        "",
        "| | tokens/s |",
        "|---|---|",
    ]
    for name, value in decode["median"].items():
        lines.append(f"| {name} | {value:.2f} |")
    lines += [
        "",
        "Time to first token (s, median):",
        "",
        "| | cold | cached (next turn) |",
        "|---|---|---|",
    ]
    for name, value in real["ttft"].items():
        lines.append(f"| {name} | {value['cold']:.2f} | {value['cached']:.2f} |")
    lines += [
        "",
        "Aggregate tokens/s, non-streamed requests sent at once (median):",
        "",
        "| prompts | c | ddx-llm | mlx_lm.server | ratio |",
        "|---|---|---|---|---|",
    ]
    for key, value in real["aggregate"].items():
        kind, level = key.split("-c")
        ours = value["ddx-llm"]["tokens_per_second"]
        theirs = value["mlx_lm.server"]["tokens_per_second"]
        lines.append(f"| {kind} | {level} | {ours:.2f} | {theirs:.2f} | **{ours / theirs:.2f}** |")
    lines += [
        "",
        "`/health` latency while a 60-word prompt is prefilled and decoded (ms):",
        "",
        "| | prefill p50 | prefill p99 | decode p50 | decode p99 |",
        "|---|---|---|---|---|",
    ]
    for name, value in real["health"].items():
        pre, dec = value["prefill"], value["decode"]
        lines.append(
            f"| {name} | {fmt(pre['p50_ms'], 1)} | {fmt(pre['p99_ms'], 1)} | "
            f"{fmt(dec['p50_ms'], 1)} | {fmt(dec['p99_ms'], 1)} |"
        )
    lines.append("")
    return lines


def swaps_section(results: dict) -> list[str]:
    swaps = results.get("swaps")
    lines = []
    if swaps:
        lines += [
            "## Swaps and memory",
            "",
            f"- swap `load_ms` {[round(v) for v in swaps['swap_ms']]} ms; bare `mlx_lm.load` of "
            f"the same folders {[round(v) for v in swaps['bare_ms']]} ms; median ratio "
            f"**{swaps['ratio']:.2f}**",
            f"- RSS after {len(swaps['swap_ms'])} swaps {swaps['rss_mb']:.0f} MB, a fresh start "
            f"with the same model {swaps['fresh_rss_mb']:.0f} MB: **{swaps['rss_ratio']:.2f}**",
        ]
        unload = swaps.get("last_unload") or {}
        if unload:
            lines.append(f"- the last unload took {unload.get('unload_ms')} ms")
    streams = results.get("streams")
    if streams:
        if not lines:
            lines += ["## Swaps and memory", ""]
        ours, bare = streams["ddx"], streams["bare"]
        lines.append(
            f"- memory per idle SSE stream ({ours['streams']} held open): ddx-llm "
            f"{ours['kb_per_stream']:.0f} KB, bare app {bare['kb_per_stream']:.0f} KB"
        )
    return [*lines, ""] if lines else []


def write(results: dict, folder: Path, markdown: Path) -> None:
    import charts

    images = charts.draw(results, folder)
    rows = issue_rows(results)
    lines = [
        "# Benchmarks",
        "",
        "ddx-llm measured beside its peers **in one run** by `tox -e bench` (`bench/run.py`; "
        "not part of CI, loopback only).  Every figure below comes from "
        "`bench/results/results.json` of that run; ratios are ddx-llm / anchor.",
        "",
        "## The issue's table (issue 14), measured in this run",
        "",
        "| what | ddx-llm / anchor | target | met |",
        "|---|---|---|---|",
    ]
    for what, measured, target, met in rows:
        lines.append(f"| {what} | {measured} | {target} | {met} |")
    lines.append("")
    for part, why in results.get("failed_parts", {}).items():
        lines += [f"Part `{part}` failed in this run: `{why}`.", ""]
    lines += machine_section(results)
    notes = BENCH / "notes.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    for image, caption in images:
        lines += [f"![{caption}](bench/results/{image.name})", ""]
    lines += gateway_section(results) + app_section(results)
    lines += real_section(results) + swaps_section(results)
    markdown.write_text("\n".join(lines).rstrip() + "\n")


def median(values) -> float:
    return statistics.median(list(values))


if __name__ == "__main__":
    data = json.loads((BENCH / "results" / "results.json").read_text())
    write(data, BENCH / "results", BENCH.parent / "BENCHMARKS.md")
