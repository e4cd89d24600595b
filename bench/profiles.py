"""Where a server's CPU goes: py-spy's collapsed stacks summed into shares of the samples.

``py-spy record --format raw`` writes one line per distinct stack, ``frame;frame;... count``,
each frame ``function (file:line)``.  :func:`summarize` gives, for the busiest functions, the
share of samples in which the function is on the stack (``total``) and at its top (``own``);
:func:`by_area` groups the inclusive shares by the areas the issue names (the access-log
filter, anyio, middleware, metrics, validation, serialisation, Hypercorn, the event loop).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


IDLE = ("Condition.wait (threading.py", "Queue.get (queue.py")
"""Innermost frames of a thread that only waits for work (anyio's idle worker threads): py-spy
samples them as active, which once showed a quarter of a saturated server's "CPU" in anyio."""


def stacks(path: Path) -> list[tuple[list[str], int]]:
    """The stacks of ``path`` with their sample counts, idle threads' stacks left out."""
    found = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1].strip().startswith(IDLE):
            continue
        found.append((frames, int(count)))
    return found


def label(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/ddx_llm/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


def summarize(path: Path, top: int = 25) -> dict:
    """``{"samples", "own": [(label, share)], "total": [(label, share)]}``."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks(path):
        samples += count
        labels = [label(f) for f in frames]
        own[labels[-1]] += count
        for name in set(labels):
            total[name] += count
    share = lambda c: [(n, round(v / samples, 4)) for n, v in c.most_common(top)]  # noqa: E731
    return {"samples": samples, "own": share(own), "total": share(total)}


AREAS = {
    "access-log filter (auth plugin)": ("log_redaction.py",),
    "access log (Hypercorn's atoms, logging)": ("hypercorn/logging.py", "logging/__init__.py"),
    "anyio (task groups, cancel scopes)": ("anyio/", "sniffio/"),
    "pydantic (validation, serialisation)": ("pydantic",),
    "prometheus-client": ("prometheus_client/",),
    "lifecycle events and observers": (
        "ddx_llm/events.py",
        "plugins/metrics/series.py",
        "plugins/metrics/__init__.py",
        "plugins/messages/",
        "pluggy/",
    ),
    "plugin middleware (request id, CORS, metrics, auth)": (
        "plugins/request_id.py",
        "starlette/middleware/cors.py",
        "plugins/metrics/http.py",
        "plugins/auth/",
    ),
    "core middleware (framing, errors, body limit, app)": (
        "ddx_llm/middleware/",
        "ddx_llm/factory.py",
        "ddx_llm/asgi.py",
    ),
    "core request path (chat, shaping, SSE, host)": (
        "ddx_llm/api/",
        "ddx_llm/sse.py",
        "ddx_llm/host/",
        "ddx_llm/routing.py",
        "ddx_llm/context.py",
        "ddx_llm/errors.py",
    ),
    "mock backend": ("plugins/mock/", "plugins/structured_output/"),
    "bare app": ("bare_app.py",),
    "Starlette (routing, requests, responses)": ("starlette/",),
    "Hypercorn's HTTP (h11, h2)": ("hypercorn/protocol/", "h11/", "h2/", "hpack/"),
    "Hypercorn's server and the event loop": ("hypercorn/", "asyncio/", "trio/", "selectors.py"),
}
"""Each sample goes to the area of its innermost frame that belongs to one (standard-library
frames such as ``json`` or ``uuid`` count for the code that called them)."""


def by_area(path: Path) -> dict[str, float]:
    """Share of the samples in each area (exclusive: they add up to 1 with ``other``)."""
    counts: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks(path):
        samples += count
        counts[_area(frames)] += count
    names = [*AREAS, "other"]
    return {area: round(counts[area] / samples, 4) for area in names} if samples else {}


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        match = FRAME.match(frame.strip())
        file = match["file"] if match else frame
        for area, needles in AREAS.items():
            if any(needle in file for needle in needles):
                return area
    return "other"


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def record(server, route: str, protocol: str, concurrency: int, seconds: float, out: Path) -> dict:
    """Load ``server`` and sample it with py-spy meanwhile (100 Hz, every thread); the
    collapsed stacks go to ``out``.  Returns the summary, or why there is none."""
    import gateway

    spy = py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install -e '.[bench]')"}
    gateway.load(server, route, protocol, concurrency, 1.0)
    command = [
        spy,
        "record",
        "--pid",
        str(server.process.pid),
        "--rate",
        "100",
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    gateway.load(server, route, protocol, concurrency, seconds)
    _, error = sampler.communicate(timeout=seconds + 60)
    if sampler.returncode != 0 or not out.exists():
        return {"skipped": f"py-spy failed: {error.decode(errors='replace')[-300:]}"}
    return {"file": out.name, **summarize(out, 15), "areas": by_area(out)}


def record_gateway(folder: Path, seconds: float, log=print) -> dict:
    """Profiles of the saturated servers: ddx-llm (all plugins) and the bare app, non-streamed
    chat and the SSE stream, HTTP/1.1 at 16 connections, asyncio."""
    import gateway

    found = {}
    for name in ("ddx", "bare"):
        server = (
            gateway.start_ddx("asyncio", plugins=True)
            if name == "ddx"
            else gateway.start_bare("asyncio", gateway.fixture())
        )
        try:
            for route in ("chat", "sse"):
                out = folder / f"profile-{name}-{route}.txt"
                found[f"{name}-{route}"] = record(server, route, "h1", 16, seconds, out)
                log(f"  profile {name} {route}: {found[f'{name}-{route}'].get('samples')} samples")
        finally:
            server.stop()
    return found


if __name__ == "__main__":
    result = summarize(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25)
    print("samples", result["samples"])
    print("--- own")
    for name, share in result["own"]:
        print(f"{share * 100:5.1f}%  {name}")
    print("--- total")
    for name, share in result["total"]:
        print(f"{share * 100:5.1f}%  {name}")
    print("--- areas")
    for area, share in by_area(Path(sys.argv[1])).items():
        print(f"{share * 100:5.1f}%  {area}")
