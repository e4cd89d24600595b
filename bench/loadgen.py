"""The load generators, each a process of its own on the load core: ``wrk`` for HTTP/1.1 and
``h2load`` for h2c (HTTP/2 with prior knowledge).

Why two: h2load 1.52 (Debian 12) counts every HTTP/1.1 answer without a reason phrase as failed
(Hypercorn sends ``HTTP/1.1 200 ``; h2load reads the status only from the reason phrase's
callback), so its HTTP/1.1 figures cannot tell errors from answers.  wrk speaks only HTTP/1.1.
Both are closed-loop: ``concurrency`` requests are always in flight.

A run returns the requests answered, the seconds measured, requests per second, errors and the
latency of each request as percentiles in milliseconds (``p50``, ``p90``, ``p99``, ``p99.9``,
and ``cdf``: the 1st to 99th percentiles, then 99.5 and 99.9, for the charts).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from common import LOAD_CORE, pinned

CDF_POINTS = [*range(1, 100), 99.5, 99.9]
H2C_CONNECTIONS = 4
"""h2c: ``concurrency`` streams spread over this many connections (an HTTP/2 client multiplexes)."""

WRK_SCRIPT = """
wrk.method = {method}
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local points = {{{points}}}
  local cdf = {{}}
  for i, p in ipairs(points) do cdf[i] = latency:percentile(p) end
  io.write("BENCH-JSON {{\\"requests\\":" .. summary.requests .. ",\\"duration_us\\":" ..
    summary.duration .. ",\\"status_errors\\":" .. summary.errors.status ..
    ",\\"socket_errors\\":" .. (summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout) .. ",\\"cdf_us\\":[" ..
    table.concat(cdf, ",") .. "]}}\\n")
end
"""


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def percentiles(cdf_ms: list[float]) -> dict:
    at = dict(zip(CDF_POINTS, cdf_ms, strict=True))
    return {"p50": at[50], "p90": at[90], "p99": at[99], "p99.9": at[99.9], "cdf": cdf_ms}


def wrk(
    url: str,
    *,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
) -> dict:
    """One closed-loop HTTP/1.1 run of ``seconds`` with ``concurrency`` connections."""
    lines = [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]
    script = WRK_SCRIPT.format(
        method=lua_string(method),
        body=lua_string(body.decode()) if body else "nil",
        headers="\n".join(lines),
        points=",".join(str(p) for p in CDF_POINTS),
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        handle.name,
        url,
    ]
    out = subprocess.run(pinned(command, LOAD_CORE), capture_output=True, text=True, check=True)
    Path(handle.name).unlink()
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH-JSON "))
    data = json.loads(line.split(" ", 1)[1])
    measured = data["duration_us"] / 1e6
    return {
        "requests": data["requests"],
        "seconds": measured,
        "rps": data["requests"] / measured,
        "errors": data["status_errors"] + data["socket_errors"],
        **percentiles([v / 1000 for v in data["cdf_us"]]),
    }


def h2load(
    url: str,
    *,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
) -> dict:
    """One closed-loop h2c run: ``concurrency`` streams over :data:`H2C_CONNECTIONS`
    connections for ``seconds``."""
    connections = min(H2C_CONNECTIONS, concurrency)
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "requests.log"
        command = [
            "h2load",
            "-c",
            str(connections),
            "-m",
            str(concurrency // connections),
            "-D",
            f"{seconds:g}",
            "--log-file",
            str(log),
        ]
        if body is not None:
            data = Path(folder) / "body"
            data.write_bytes(body)
            command += ["-d", str(data)]
        if method not in ("GET", "POST"):
            raise ValueError(method)
        for key, value in headers.items():
            command += ["-H", f"{key}: {value}"]
        out = subprocess.run(
            pinned([*command, url], LOAD_CORE), capture_output=True, text=True, check=True
        ).stdout
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    if done is None or finished is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    measured = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    requests, succeeded = int(done.group(1)), int(done.group(2))
    durations = sorted(int(row[2]) / 1000 for row in rows if row[1].startswith("2"))
    if not durations:
        raise RuntimeError(f"h2load got no successful answer from {url}:\n{out[-1500:]}")
    cdf = [durations[min(len(durations) - 1, int(len(durations) * p / 100))] for p in CDF_POINTS]
    return {
        "requests": succeeded,
        "seconds": measured,
        "rps": succeeded / measured,
        "errors": requests - succeeded,
        **percentiles(cdf),
    }


def run(protocol: str, url: str, **kwargs) -> dict:
    """A run with the load generator of ``protocol`` (``h1`` or ``h2c``)."""
    return (wrk if protocol == "h1" else h2load)(url, **kwargs)
