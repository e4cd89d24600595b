"""What every part of the harness shares: servers as processes pinned to a core, readiness,
CPU time of a process, the machine and the versions.

Servers run on core 0 and load generators on core 1 (``taskset``) when the machine has two
cores or more and ``taskset`` exists; otherwise unpinned (the report says which).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SERVER_CORE, LOAD_CORE = 0, 1
PINNED = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A free loopback port: the first free one of ``BENCH_PORTS`` (``low-high``) when set,
    else one the system picks."""
    low, _, high = os.environ.get("BENCH_PORTS", "0-0").partition("-")
    for port in range(int(low), int(high or low) + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise SystemExit(f"no free port in BENCH_PORTS={os.environ['BENCH_PORTS']}")


def pinned(command: list[str], core: int) -> list[str]:
    """``command`` run on ``core`` only (unchanged when pinning is not available)."""
    return ["taskset", "-c", str(core), *command] if PINNED else command


@dataclass
class Server:
    """A server process on loopback: its name, URL, process and log file."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path
    meta: dict = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (Linux ``/proc``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start_server(
    name: str,
    command: list[str],
    env: dict[str, str],
    ready: Callable[[str], bool],
    *,
    core: int | None = SERVER_CORE,
    timeout: float = 180,
) -> Server:
    """Start ``command`` (which must listen on the ``{port}`` it is given) and wait until
    ``ready(url)`` is true; raises SystemExit with the log when it exits or never gets ready."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    if core is not None:
        command = pinned(command, core)
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(name, f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log.read_text()[-4000:]}")
        try:
            if ready(server.url):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise SystemExit(f"{name} did not get ready in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def machine() -> dict:
    """The machine and the versions the figures were measured with."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in (
        "ddx-llm",
        "hypercorn",
        "starlette",
        "anyio",
        "trio",
        "h11",
        "h2",
        "pydantic",
        "prometheus-client",
        "mlx",
        "mlx-lm",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    h2load = shutil.which("h2load")
    if h2load:
        out = subprocess.run([h2load, "--version"], capture_output=True, text=True).stdout
        versions["h2load"] = out.split()[-1] if out.split() else None
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "pinned": PINNED,
        "versions": versions,
    }


def ratio(ours: float, anchor: float) -> float | None:
    return round(ours / anchor, 3) if anchor else None
