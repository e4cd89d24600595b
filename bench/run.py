"""The benchmark harness: ddx-llm and its peers measured side by side in one run.

    tox -e bench                      # everything (about 35 minutes on 2 cores)
    tox -e bench -- --quick           # one round each, shorter runs (about 10 minutes)
    tox -e bench -- --parts gateway   # gateway, app, streams, real, swaps (comma-separated)

Parts (loopback only, every server a process of its own):

- ``gateway`` (:mod:`gateway`): ddx-llm with all plugins and an API key, with its plugins off,
  and a bare Starlette app returning the same bytes, on the same Hypercorn; h1 and h2c, two
  concurrencies, asyncio and trio workers; plus a py-spy profile of the saturated server;
- ``app`` (:mod:`inprocess`): the ASGI app's own cost per request, in process (no server, no
  sockets): bare, plugins off, all plugins, and all but one plugin for each plugin's cost;
- ``streams``: memory per idle SSE stream, ddx-llm beside the bare app;
- ``real`` (:mod:`realmode`): the bundled SmolLM2 on ddx-llm, ``mlx_lm.server`` and mlx-lm in
  process: decode, TTFT cold and cached, aggregate throughput, ``/health`` during prefill and
  decode;
- ``swaps`` (:mod:`swaps`): swap time beside a bare ``mlx_lm.load``, memory after swaps.

Results go to ``bench/results/results.json`` (every run, every figure), and :mod:`report`
writes ``BENCHMARKS.md`` and the charts in ``bench/results/`` from it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import gateway  # noqa: E402

RESULTS = BENCH / "results"
PARTS = ("gateway", "app", "streams", "real", "swaps")


def log(line: str) -> None:
    print(line, flush=True)


def run_gateway(args: argparse.Namespace) -> dict:
    import profiles

    quick = args.quick
    rows = gateway.compare(
        workers=["asyncio", "trio"],
        routes=["chat", "sse", "models"],
        protocols=["h1", "h2c"],
        concurrencies=[16, 64],
        rounds=1 if quick else args.rounds,
        seconds=2.0 if quick else args.seconds,
        progress=log,
    )
    profile = profiles.record_gateway(RESULTS, seconds=4 if quick else 8, log=log)
    return {"rows": rows, "summary": gateway.summarize(rows), "profile": profile}


def run_app(args: argparse.Namespace) -> dict:
    """The app part: µs per request of each variant in process (about 2 minutes; --quick under
    one)."""
    import inprocess

    return inprocess.measure(args.quick, progress=log)


def run_streams(args: argparse.Namespace) -> dict:
    import swaps

    n = 100 if args.quick else 300
    found = {}
    for name, start in (
        # every stream must get its headers: room for all of them to generate at once
        ("ddx", lambda: gateway.start_ddx("asyncio", plugins=True, **room_for(n))),
        ("bare", lambda: gateway.start_bare("asyncio", gateway.fixture())),
    ):
        server = start()
        try:
            headers = {"x-api-key": gateway.API_KEY}
            found[name] = swaps.idle_stream_memory(server, n, headers)
            log(f"  idle streams {name}: {found[name]}")
        finally:
            server.stop()
    return found


def room_for(n: int) -> dict[str, str]:
    """Admission settings letting ``n`` requests generate at once (the conf allows 8)."""
    return {"DDX_LLM_MAX_RUNNING": str(n), "DDX_LLM_MAX_WAITING": str(n)}


def models_dir() -> tuple[Path, dict[str, Path]]:
    from ddx_llm.plugins.mlx_models.bundled import ensure_bundled_model, ensure_tools_variant

    folder = common.ROOT / "models" / "cache"
    bundled = ensure_bundled_model(folder)
    tools = ensure_tools_variant(folder)
    return folder, {"SmolLM2-135M-Instruct": bundled, "SmolLM2-135M-Instruct-tools": tools}


def run_real(args: argparse.Namespace) -> dict:
    import realmode

    folder, folders = models_dir()
    quick = args.quick
    ddx = realmode.start_ddx(folder)
    mlx_lm = realmode.start_mlx_lm(folders["SmolLM2-135M-Instruct"])
    servers = {"ddx-llm": ddx.url, "mlx_lm.server": mlx_lm.url}
    try:
        found = {
            "decode": realmode.decode(
                servers,
                folders["SmolLM2-135M-Instruct"],
                tokens=48,
                rounds=1 if quick else 3,
                log=log,
            ),
            "ttft": realmode.ttft(servers, rounds=1 if quick else 3, log=log),
            "aggregate": realmode.aggregate(
                servers, [1, 2, 4, 8], tokens=24 if quick else 32, rounds=1 if quick else 2, log=log
            ),
            "health": {
                name: realmode.health_latency(url, 60, 16, log=log) for name, url in servers.items()
            },
        }
    finally:
        ddx.stop()
        mlx_lm.stop()
    return found


def run_swaps(args: argparse.Namespace) -> dict:
    import realmode
    import swaps

    folder, folders = models_dir()
    count = 5
    ddx = realmode.start_ddx(folder)
    try:
        found = swaps.swap_times(ddx, folders, count, log=log)
    finally:
        ddx.stop()
    fresh = realmode.start_ddx(folder, DDX_LLM_DEFAULT_MODEL=found["ended_on"])
    try:
        found["fresh_rss_mb"] = swaps.fresh_rss(fresh)
    finally:
        fresh.stop()
    found["rss_ratio"] = found["rss_mb"] / found["fresh_rss_mb"]
    log(f"  RSS after {count} swaps {found['rss_mb']:.0f} MB, fresh {found['fresh_rss_mb']:.0f} MB")
    return found


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, shorter runs")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument("--rounds", type=int, default=3, help="gateway A/B/C rounds")
    parser.add_argument("--seconds", type=float, default=4.0, help="gateway: seconds per run")
    parser.add_argument("--no-report", action="store_true", help="results.json only")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "machine": common.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "command": " ".join(sys.argv),
    }
    path = RESULTS / "results.json"
    runners = {
        "gateway": run_gateway,
        "app": run_app,
        "streams": run_streams,
        "real": run_real,
        "swaps": run_swaps,
    }
    for part in parts:
        log(f"== {part}")
        started = time.monotonic()
        try:
            results[part] = runners[part](args)
        except Exception as exc:  # the parts done are kept; the report names the failed one
            log(f"  {part} failed: {exc!r}")
            results.setdefault("failed_parts", {})[part] = repr(exc)
            continue
        results[part]["seconds"] = round(time.monotonic() - started, 1)
        path.write_text(json.dumps(results, indent=1, default=str))  # after every part
    results["seconds"] = round(sum(results[p]["seconds"] for p in parts if p in results), 1)
    path.write_text(json.dumps(results, indent=1, default=str))
    log(f"results: {path}")
    if not args.no_report:
        import report

        report.write(results, RESULTS, common.ROOT / "BENCHMARKS.md")
        log(f"report: {common.ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
