"""The gateway comparison: ddx-llm (all plugins on, with an API key; and with its plugins off)
beside a bare Starlette app returning the same bytes, on the same Hypercorn, in one run.

Every server runs ``hypercorn --config conf/hypercorn.toml -w 0`` (one process: the project's
access log, HTTP/2 settings and keep-alive) pinned to core 0; the load generator runs on core 1
(:mod:`loadgen`).  For each worker class (asyncio, trio), route (non-streamed chat, a 202-chunk
SSE stream, ``GET /v1/models``), protocol (h1, h2c) and concurrency, the servers take turns —
A/B/C, rotated every round — so that drift of the shared machine hits all of them alike; each
turn is a warm-up run, then a measured run during which the server's CPU time is read from
``/proc``.  Ratios are taken within a round, then the median over rounds is reported.

The bare app's bodies are captured from the ddx-llm server first (:mod:`bare_app`), so both
send the same bytes: the same completion, the same chunks, the same model list.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import loadgen
from common import ROOT, Server, start_server

API_KEY = "bench-key-0123456789"
CONF = Path(os.environ.get("BENCH_CONF_DIR", ROOT / "conf"))
"""The configuration every server runs with (``conf/``: the project's own)."""
SSE_WORDS = 200
"""The echo of 200 words: 200 content chunks, the finish chunk and the usage chunk."""
CHAT_BODY = {"messages": [{"role": "user", "content": "Weather in Berlin?"}]}
SSE_BODY = {
    "stream": True,
    "stream_options": {"include_usage": True},
    "mock": {"scenario": "echo"},
    "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(SSE_WORDS))}],
}
ROUTES = {
    "chat": ("POST", "/v1/chat/completions", CHAT_BODY),
    "sse": ("POST", "/v1/chat/completions", SSE_BODY),
    "models": ("GET", "/v1/models", None),
}
SERVERS = ("bare", "ddx", "ddx-off")


def hypercorn(worker: str, app: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hypercorn",
        "--config",
        str(CONF / "hypercorn.toml"),
        "-w",
        "0",
        "-k",
        worker,
        "--bind",
        "127.0.0.1:{port}",
        app,
    ]


def ready(url: str) -> bool:
    return httpx.get(url + "/health", timeout=2).status_code == 200


def feature_plugins() -> list[str]:
    """Every plugin the configuration loads except the backends: what "plugins off" disables."""
    env = {**os.environ, "DDX_LLM_CONF_DIR": str(CONF)}
    out = subprocess.run(
        [sys.executable, "-m", "ddx_llm.cli", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    listed = json.loads(out)["plugins"]
    return [p["name"] for p in listed if "ddx_llm_backends" not in p["hooks"]]


def start_ddx(worker: str, *, plugins: bool, **extra: str) -> Server:
    """ddx-llm on ``worker`` with the bench's API key; ``extra``: more environment."""
    env = {"DDX_LLM_CONF_DIR": str(CONF), "DDX_LLM_API_KEYS": API_KEY, **extra}
    if not plugins:
        env["DDX_LLM_DISABLED_PLUGINS"] = ",".join(feature_plugins())
    name = "ddx" if plugins else "ddx-off"
    return start_server(f"{name}-{worker}", hypercorn(worker, "ddx_llm:app"), env, ready)


def capture(url: str) -> dict:
    """ddx-llm's own answers, for the bare app to send: the completion's bytes, the chunks of
    the stream, the model list."""
    headers = {"x-api-key": API_KEY}
    completion = httpx.post(url + ROUTES["chat"][1], json=CHAT_BODY, headers=headers)
    completion.raise_for_status()
    chunks = []
    with httpx.stream("POST", url + ROUTES["sse"][1], json=SSE_BODY, headers=headers) as answer:
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                chunks.append(json.loads(line[6:]))
    models = httpx.get(url + "/v1/models").json()
    return {"completion": completion.text, "chunks": chunks, "models": models}


_FIXTURE: list[Path] = []


def fixture() -> Path:
    """A file of ddx-llm's answers for the bare app (captured once per run)."""
    if not _FIXTURE:
        server = start_ddx("asyncio", plugins=True)
        try:
            path = Path(tempfile.mkstemp(prefix="bench-fixture-", suffix=".json")[1])
            path.write_text(json.dumps(capture(server.url)))
        finally:
            server.stop()
        _FIXTURE.append(path)
    return _FIXTURE[0]


def start_bare(worker: str, fixture: Path) -> Server:
    env = {"BENCH_BARE_FIXTURE": str(fixture), "PYTHONPATH": str(ROOT / "bench")}
    return start_server(f"bare-{worker}", hypercorn(worker, "bare_app:app"), env, ready)


def load(server: Server, route: str, protocol: str, concurrency: int, seconds: float) -> dict:
    method, path, body = ROUTES[route]
    raw = json.dumps(body).encode() if body is not None else None
    headers = {"x-api-key": API_KEY}
    if raw is not None:
        headers["content-type"] = "application/json"
    args = {"method": method, "body": raw, "headers": headers, "concurrency": concurrency}
    loadgen.run(protocol, server.url + path, seconds=min(1.0, seconds), **args)  # warm-up
    before = server.cpu_seconds()
    result = loadgen.run(protocol, server.url + path, seconds=seconds, **args)
    cpu = server.cpu_seconds() - before
    result["cpu_ms_per_request"] = cpu * 1000 / result["requests"] if result["requests"] else None
    result["cpu_share"] = cpu / result["seconds"]
    return result


def compare(
    workers: list[str],
    routes: list[str],
    protocols: list[str],
    concurrencies: list[int],
    rounds: int,
    seconds: float,
    progress=print,
) -> list[dict]:
    """Every combination, the three servers taking turns; one row per measured run.  Servers
    are started afresh for each route, so a server wedged by one route (streams cut by the
    load generator's end) does not spoil the next; a run that gets no answer is a row with
    ``failed`` (0 req/s), not the end of the part."""
    rows = []
    for worker in workers:
        for route in routes:
            servers = start_three(worker)
            try:
                for protocol in protocols:
                    for concurrency in concurrencies:
                        for index in range(rounds):
                            order = SERVERS[index % 3 :] + SERVERS[: index % 3]
                            for name in order:
                                result = load_or_fail(
                                    servers[name], route, protocol, concurrency, seconds
                                )
                                row = {
                                    "worker": worker,
                                    "route": route,
                                    "protocol": protocol,
                                    "concurrency": concurrency,
                                    "server": name,
                                    "round": index,
                                    **result,
                                }
                                rows.append(row)
                                progress(
                                    f"  {worker:7} {route:6} {protocol:3} c{concurrency:<3} "
                                    f"r{index} {name:8} {result['rps']:8.0f} req/s  p99 "
                                    f"{result['p99'] or 0:7.1f} ms  cpu/req "
                                    f"{result['cpu_ms_per_request'] or 0:.3f} ms  errors "
                                    f"{result['errors']}{'  FAILED' * bool(result.get('failed'))}"
                                )
            finally:
                for server in servers.values():
                    server.stop()
    return rows


def start_three(worker: str) -> dict[str, Server]:
    """ddx-llm with its plugins, without them, and the bare app (ddx-llm's bytes captured
    from the first ddx-llm started in this run)."""
    servers: dict[str, Server] = {}
    try:
        servers["ddx"] = start_ddx(worker, plugins=True)
        if not _FIXTURE:
            path = Path(tempfile.mkstemp(prefix="bench-fixture-", suffix=".json")[1])
            path.write_text(json.dumps(capture(servers["ddx"].url)))
            _FIXTURE.append(path)
        servers["ddx-off"] = start_ddx(worker, plugins=False)
        servers["bare"] = start_bare(worker, _FIXTURE[0])
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def load_or_fail(server: Server, route: str, protocol: str, concurrency: int, seconds: float):
    """:func:`load`, or a failed row when the load generator got no answer at all."""
    try:
        return load(server, route, protocol, concurrency, seconds)
    except RuntimeError as exc:
        return {
            "rps": 0.0, "p50": None, "p99": None, "errors": 0, "requests": 0,
            "seconds": seconds, "cpu_ms_per_request": None, "cpu_share": None,
            "failed": str(exc).splitlines()[0],
        }  # fmt: skip


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (worker, route, protocol, concurrency): medians and medians of the
    per-round ratios to the bare app."""
    keys = sorted({(r["worker"], r["route"], r["protocol"], r["concurrency"]) for r in rows})
    lines = []
    for worker, route, protocol, concurrency in keys:
        runs = [
            r
            for r in rows
            if (r["worker"], r["route"], r["protocol"], r["concurrency"])
            == (worker, route, protocol, concurrency)
        ]
        by = {name: {r["round"]: r for r in runs if r["server"] == name} for name in SERVERS}
        line = {"worker": worker, "route": route, "protocol": protocol, "concurrency": concurrency}
        for name in SERVERS:
            own = list(by[name].values())
            line[name] = {
                "rps": statistics.median(r["rps"] for r in own),
                "p99_ms": _median(r["p99"] for r in own),
                "p50_ms": _median(r["p50"] for r in own),
                "cpu_ms_per_request": _median(r["cpu_ms_per_request"] for r in own),
                "errors": sum(r["errors"] for r in own),
                "failed": sum(bool(r.get("failed")) for r in own),
            }
        for name in ("ddx", "ddx-off"):
            rounds = [i for i in by["bare"] if i in by[name] and by["bare"][i]["rps"]]
            line[f"{name}/bare"] = {
                "rps": _median(by[name][i]["rps"] / by["bare"][i]["rps"] for i in rounds),
                "p99": _median(
                    by[name][i]["p99"] / by["bare"][i]["p99"]
                    for i in rounds
                    if by[name][i]["p99"] and by["bare"][i]["p99"]
                ),
            }
        lines.append(line)
    return lines


def _median(values) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


if __name__ == "__main__":  # a quick look: python bench/gateway.py asyncio chat h1 16
    worker, route, protocol, concurrency = sys.argv[1:5]
    found = compare(
        [worker],
        [route],
        [protocol],
        [int(concurrency)],
        1,
        float(os.environ.get("BENCH_SECONDS", "3")),
    )
    print(json.dumps(summarize(found), indent=1))
