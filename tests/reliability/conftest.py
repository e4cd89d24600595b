"""Fixtures of the reliability suite: ``ddx-llm serve`` processes on loopback ports.

``tests/support.py`` starts ``hypercorn ddx_llm:app``; the drain and the HTTP/2 defaults belong
to ``ddx-llm serve``, which the ``serve`` fixture starts instead (and always stops).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import ROOT, free_port


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, so no server outlives the run."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Served:
    """One ``ddx-llm serve`` process (``worker``: asyncio or trio) bound to a loopback port."""

    def __init__(self, conf_dir: Path, worker: str, env: dict[str, str], config: Path | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = conf_dir.parent / f"serve-{self.port}.log"
        config = config or conf_dir.parent / "absent-hypercorn.toml"  # Hypercorn's defaults
        command = [
            str(Path(sys.executable).with_name("ddx-llm")),
            "--conf",
            str(conf_dir),
            "serve",
            "--config",
            str(config),
            "-b",
            f"127.0.0.1:{self.port}",
            "-k",
            worker,
        ]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, timeout: float = 60) -> Served:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"ddx-llm serve exited early:\n{self.log()}"
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"ddx-llm serve not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def serve(conf_dir: Path) -> Iterator[Any]:
    """``serve(worker, env=..., config=...)`` starts ``ddx-llm serve`` on ``conf_dir`` (with
    ``conf_dir/hypercorn.toml``, the project's, unless ``config`` says otherwise; None: no file)
    and waits until ``/readyz`` is 200.  Every process is killed at teardown if still running."""
    started: list[Served] = []

    def start(
        worker: str, *, env: dict[str, str] | None = None, config: Path | str | None = "project"
    ) -> Served:
        chosen = conf_dir / "hypercorn.toml" if config == "project" else config
        served = Served(
            conf_dir, worker, {"DDX_LLM_CONF_DIR": str(conf_dir), **(env or {})}, chosen
        )
        started.append(served)
        return served.wait_ready()

    yield start
    for served in started:
        served.stop()
