"""The app part: the ASGI app's own cost per request, in process — no server, no sockets.

Each variant is built in a process of its own (plugins and environment differ), its lifespan
run, then called directly with a scope, a ``receive`` that hands over the request's body and a
``send`` that counts the messages: µs per request, sequential requests, the median of timed
batches after a warm-up.  The variants:

- ``bare``: the bare Starlette app (:mod:`bare_app`) sending ddx-llm's bytes, captured in
  process from the ddx-llm app of this run (the shape of :func:`gateway.capture`);
- ``off``: ddx-llm with every non-backend plugin disabled (:func:`gateway.feature_plugins`);
- ``ddx``: ddx-llm with all plugins and an API key (the gateway's ``ddx``); on asyncio it
  runs first and again last, and its figure is the median of both;
- ``no-<plugin>``: all plugins but that one (asyncio only): the plugin's cost is ``ddx`` minus
  this.

The routes are the gateway's (non-streamed chat, the 202-chunk SSE stream, ``GET /v1/models``),
on asyncio and trio.  The first answer of each route is checked in full (status 200, the JSON,
every chunk of the stream); every later one must be a 200 with the same number of messages, or
the run fails.  These figures exclude the server: Hypercorn's own per-request cost is what the
gateway part adds on top.

    python bench/inprocess.py ddx asyncio        # one variant: its figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import gateway  # noqa: E402
from common import ROOT  # noqa: E402

BACKENDS = ("asyncio", "trio")
ROUTES = ("chat", "sse", "models")
BASE_VARIANTS = ("bare", "off", "ddx")
SSE_EVENTS = gateway.SSE_WORDS + 3
"""Events of the stream: 200 content chunks, the finish chunk, the usage chunk, ``[DONE]``."""
HEALTH_SECONDS = 30.0


# --- the parent: one process per variant and backend -------------------------------------


def variant_env(variant: str, plugins: list[str], fixture: Path) -> dict[str, str]:
    """The environment of ``variant``'s process: this checkout's ddx-llm and conf, the bench's
    API key, the plugins it disables, the fixture for the bare app."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH)]),
        "DDX_LLM_CONF_DIR": str(gateway.CONF),
        "DDX_LLM_API_KEYS": gateway.API_KEY,
        "BENCH_BARE_FIXTURE": str(fixture),
    }
    env.pop("DDX_LLM_DISABLED_PLUGINS", None)
    if variant == "off":
        env["DDX_LLM_DISABLED_PLUGINS"] = ",".join(plugins)
    elif variant.startswith("no-"):
        env["DDX_LLM_DISABLED_PLUGINS"] = variant[3:]
    return env


def run_variant(variant: str, backend: str, env: dict[str, str], timing: dict, capture=None):
    """Measure ``variant`` on ``backend`` in a process of its own; its figures per route.
    ``capture``: a path where the ddx app first writes its answers for the bare app."""
    command = [sys.executable, str(Path(__file__)), variant, backend]
    command += [f"--{key.replace('_', '-')}={value}" for key, value in timing.items()]
    if capture is not None:
        command.append(f"--capture={capture}")
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"app part, {variant} on {backend}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(quick: bool, progress: Callable[[str], None] = print) -> dict:
    """Every variant of :func:`order`, one process each, one after the other.  Returns the
    timing, the feature plugins, where ddx-llm was imported from, the runs and the summary."""
    timing = timing_for(quick)
    plugins = gateway.feature_plugins()
    fixture = Path(tempfile.mkstemp(prefix="bench-app-fixture-", suffix=".json")[1])
    runs: list[dict] = []
    module = None
    try:
        for backend in BACKENDS:
            for variant in order(backend, plugins):
                first = variant == "ddx" and not runs
                env = variant_env(variant, plugins, fixture)
                found = run_variant(variant, backend, env, timing, fixture if first else None)
                module = found["ddx_llm"]
                for route, figures in found["routes"].items():
                    runs.append({"variant": variant, "backend": backend, "route": route, **figures})
                    progress(line(runs[-1]))
    finally:
        fixture.unlink(missing_ok=True)
    summary = summarize(runs)
    return {"timing": timing, "plugins": plugins, "ddx_llm": module, "runs": runs, **summary}


def order(backend: str, plugins: list[str]) -> list[str]:
    """The variants of ``backend`` in the order they run: ddx first (the first ddx captures the
    bare app's fixture), off, bare; on asyncio then ddx without each plugin, and ddx again last
    (its figure is the median of both runs, and their gap shows the machine's drift)."""
    variants = ["ddx", "off", "bare"]
    if backend == "asyncio":
        variants += [f"no-{plugin}" for plugin in plugins] + ["ddx"]
    return variants


def line(run: dict) -> str:
    """One run, for the progress log."""
    return (
        f"  {run['backend']:7} {run['route']:6} {run['variant']:16} {run['us']:9.1f} µs/request"
        f"  spread {run['spread'] * 100:4.1f} %  ({run['requests']} requests, "
        f"{run['messages']} messages each)"
    )


def timing_for(quick: bool) -> dict:
    """Warm-up seconds, timed batches and seconds per batch, per route."""
    if quick:
        return {"warmup_seconds": 0.2, "batches": 5, "batch_seconds": 0.1}
    return {"warmup_seconds": 0.5, "batches": 7, "batch_seconds": 0.3}


def summarize(runs: list[dict]) -> dict:
    """Per backend and route: µs/request of bare, off and ddx (the median of its runs) and the
    ratios to bare; per route, each plugin's cost on asyncio (ddx minus ddx without it)."""
    us = medians(runs)
    table = []
    for backend in BACKENDS:
        for route in ROUTES:
            row = {"backend": backend, "route": route}
            row.update({v: us.get((backend, route, v)) for v in BASE_VARIANTS})
            row["ddx/bare"] = ratio(row["ddx"], row["bare"])
            row["off/bare"] = ratio(row["off"], row["bare"])
            if row["ddx"] is not None:
                table.append(row)
    plugins = [r["variant"][3:] for r in runs if r["variant"].startswith("no-")]
    costs = {
        plugin: {
            route: difference(
                us.get(("asyncio", route, "ddx")), us.get(("asyncio", route, f"no-{plugin}"))
            )
            for route in ROUTES
        }
        for plugin in dict.fromkeys(plugins)  # in the order they ran
    }
    return {"summary": table, "plugin_cost_us": costs}


def medians(runs: list[dict]) -> dict[tuple[str, str, str], float]:
    """(backend, route, variant) → the median µs/request of its runs (ddx on asyncio runs
    twice)."""
    found: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        found.setdefault((run["backend"], run["route"], run["variant"]), []).append(run["us"])
    return {key: round(statistics.median(values), 2) for key, values in found.items()}


def ratio(ours: float | None, anchor: float | None) -> float | None:
    return round(ours / anchor, 3) if ours is not None and anchor else None


def difference(ours: float | None, without: float | None) -> float | None:
    return round(ours - without, 1) if ours is not None and without is not None else None


# --- the child: one variant on one backend -----------------------------------------------


def build(variant: str):
    """The ASGI app of ``variant`` (the environment already says which plugins are off)."""
    if variant == "bare":
        import bare_app

        return bare_app.app
    from ddx_llm.factory import create_app

    return create_app()


def request_body(route: str) -> bytes:
    body = gateway.ROUTES[route][2]
    return json.dumps(body).encode() if body is not None else b""


def make_scope(method: str, path: str, body: bytes) -> dict:
    """An HTTP/1.1 scope as Hypercorn gives it, with the bench's API key."""
    headers = [(b"host", b"127.0.0.1"), (b"x-api-key", gateway.API_KEY.encode())]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4250),
        "extensions": {},
        "state": {},
    }


async def call(app, method: str, path: str, body: bytes, keep: bool = False) -> tuple:
    """One request: (status, number of messages sent, the body's bytes when ``keep``)."""
    delivered = False
    status, count, parts = 0, 0, []

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()  # no disconnect: the client waits for the whole answer

    async def send(message: dict) -> None:
        nonlocal status, count
        count += 1
        if message["type"] == "http.response.start":
            status = message["status"]
        elif keep:
            parts.append(message.get("body", b""))

    await app(make_scope(method, path, body), receive, send)
    return status, count, b"".join(parts)


@asynccontextmanager
async def lifespan(app) -> AsyncIterator[None]:
    """Run ``app``'s lifespan around the block, and wait until its ``/health`` is ok."""
    to_app, app_receives = anyio.create_memory_object_stream(4)
    app_sends, from_app = anyio.create_memory_object_stream(4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with anyio.create_task_group() as group:
        group.start_soon(app, scope, app_receives.receive, app_sends.send)
        await to_app.send({"type": "lifespan.startup"})
        expect(await from_app.receive(), "lifespan.startup.complete")
        await healthy(app)
        try:
            yield
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            expect(await from_app.receive(), "lifespan.shutdown.complete")


def expect(message: dict, wanted: str) -> None:
    if message["type"] != wanted:
        raise SystemExit(f"lifespan: {message!r}, expected {wanted}")


async def healthy(app) -> None:
    """Wait until ``GET /health`` answers 200 with status ok (the default model loaded)."""
    deadline = time.monotonic() + HEALTH_SECONDS
    while True:
        status, _, body = await call(app, "GET", "/health", b"", keep=True)
        if status == 200 and json.loads(body).get("status") == "ok":
            return
        if time.monotonic() > deadline:
            raise SystemExit(
                f"/health not ok after {HEALTH_SECONDS:.0f} s: {status} {body[:200]!r}"
            )
        await anyio.sleep(0.05)


async def capture(app) -> dict:
    """The app's own answers for the bare app, as :func:`gateway.capture` returns them."""
    answers = {}
    for route in ROUTES:
        method, path, _ = gateway.ROUTES[route]
        status, _, body = await call(app, method, path, request_body(route), keep=True)
        if status != 200:
            raise SystemExit(f"capture {route}: status {status}: {body[:300]!r}")
        answers[route] = body
    chunks = [json.loads(e[6:]) for e in events(answers["sse"]) if e.startswith(b"data: {")]
    return {
        "completion": answers["chat"].decode(),
        "chunks": chunks,
        "models": json.loads(answers["models"]),
    }


def events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e.strip()]


def check(route: str, status: int, body: bytes) -> None:
    """The first answer of ``route`` in full: a 200 with what the route must answer."""
    if status != 200:
        raise SystemExit(f"{route}: status {status}: {body[:300]!r}")
    if route == "chat":
        if not json.loads(body).get("choices"):
            raise SystemExit(f"chat: no choices in {body[:300]!r}")
    elif route == "models":
        if not json.loads(body).get("data"):
            raise SystemExit(f"models: no models in {body[:300]!r}")
    else:
        found = events(body)
        if len(found) != SSE_EVENTS or found[-1] != b"data: [DONE]":
            raise SystemExit(f"sse: {len(found)} events, expected {SSE_EVENTS} ending in [DONE]")
        for event in found[:-1]:
            json.loads(event.removeprefix(b"data: "))


async def time_route(app, route: str, warmup_seconds: float, batches: int, batch_seconds: float):
    """µs per request of ``route``: a checked first answer, a warm-up that sizes the batches,
    then ``batches`` timed batches of sequential requests (median and spread)."""
    method, path, _ = gateway.ROUTES[route]
    body = request_body(route)
    status, messages, answer = await call(app, method, path, body, keep=True)
    check(route, status, answer)

    async def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            got = await call(app, method, path, body)
            if got[:2] != (200, messages):
                raise SystemExit(f"{route}: status {got[0]}, {got[1]} messages (not {messages})")
        return time.perf_counter() - started

    n, spent = 0, 0.0
    while spent < warmup_seconds or n < 20:
        spent += await batch(10)
        n += 10
    size = max(10, round(batch_seconds * n / spent))
    per_request = [await batch(size) * 1e6 / size for _ in range(batches)]
    middle = statistics.median(per_request)
    return {
        "us": round(middle, 2),
        "spread": round((max(per_request) - min(per_request)) / middle, 4),
        "batches_us": [round(v, 2) for v in per_request],
        "requests": size * batches,
        "messages": messages,
    }


async def child(args: argparse.Namespace) -> tuple[dict, dict | None]:
    """Build the variant, run its lifespan, capture its answers when asked, time every route."""
    app = build(args.variant)
    found, captured = {}, None
    async with lifespan(app):
        if args.capture:
            captured = await capture(app)
        for route in ROUTES:
            found[route] = await time_route(
                app, route, args.warmup_seconds, args.batches, args.batch_seconds
            )
    return found, captured


def main() -> None:
    parser = argparse.ArgumentParser(description="one variant of the app part, JSON on stdout")
    parser.add_argument("variant", help="bare, off, ddx or no-<plugin>")
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("--warmup-seconds", type=float, default=0.5)
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--batch-seconds", type=float, default=0.3)
    parser.add_argument("--capture", help="write the app's answers here first (bare's fixture)")
    args = parser.parse_args()
    if args.variant == "bare" and not os.environ.get("BENCH_BARE_FIXTURE"):
        parser.error("bare needs BENCH_BARE_FIXTURE (a fixture captured from ddx)")
    found, captured = anyio.run(child, args, backend=args.backend)
    if captured is not None:
        Path(args.capture).write_text(json.dumps(captured))
    print(json.dumps({"routes": found, "ddx_llm": ddx_llm_file()}))  # the last line of stdout


def ddx_llm_file() -> str:
    """Where the ddx-llm measured comes from (this checkout's, through ``PYTHONPATH``)."""
    import ddx_llm

    return ddx_llm.__file__


if __name__ == "__main__":
    main()
