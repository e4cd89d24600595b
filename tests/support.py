"""Test helpers: an in-process app with its lifespan, conf editing, and a real Hypercorn process."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from ddx_llm.factory import DdxApp, create_app

ROOT = Path(__file__).resolve().parents[1]


def require_module(name: str) -> ModuleType:
    """Import ``name`` for a test that needs an optional dependency (MLX, mlx-lm).

    Without it the test is skipped — except under CI (``CI`` set), where the project's own files
    install every optional dependency the tests use: there a skip would hide a broken set-up, so
    the ImportError fails the test (or, at module level, the collection).
    """
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


def copy_project_conf(dest: Path) -> Path:
    """Copy the project's ``conf/`` to ``dest`` and its drop-in folder ``plugins/`` beside it
    (the conf names both: ``plugins_dir`` and the drop-in it disables)."""
    shutil.copytree(ROOT / "conf", dest)
    skip_guide = shutil.ignore_patterns("*.md")
    shutil.copytree(ROOT / "plugins", dest.parent / "plugins", ignore=skip_guide)
    return dest


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def write_conf(conf_dir: Path, sections: dict[str, dict[str, Any]]) -> None:
    """Rewrite ``conf_dir/ddx-llm.toml`` with the project's values updated by ``sections``."""
    path = conf_dir / "ddx-llm.toml"
    current = tomllib.loads(path.read_text()) if path.exists() else {}
    for name, values in sections.items():
        current.setdefault(name, {}).update(values)
    lines = []
    for name, values in current.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))


def add_models(conf_dir: Path, *entries: dict[str, Any]) -> None:
    """Append ``[[models]]`` entries to ``models.toml``."""
    with (conf_dir / "models.toml").open("a") as handle:
        for entry in entries:
            handle.write("\n[[models]]\n")
            handle.writelines(f"{key} = {toml_value(value)}\n" for key, value in entry.items())


@asynccontextmanager
async def running_app(
    conf_dir: Path, extra_plugins: tuple = (), **client_args: Any
) -> AsyncIterator[tuple[DdxApp, httpx.AsyncClient]]:
    """Build the app from ``conf_dir``, run its lifespan, and give an httpx client bound to it."""
    app = create_app(conf_dir, extra_plugins=extra_plugins)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        # not manager.app: it would share one scope["state"] dict between all requests
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", **client_args
        ) as client:
            yield app, client


def documented(body: dict[str, Any]) -> dict[str, Any]:
    """An error body without its OpenAI ``error`` envelope, after checking that the envelope
    repeats ``code`` and ``message`` exactly."""
    body = dict(body)
    envelope = body.pop("error")
    assert envelope == {
        "message": body["message"], "type": body["code"], "code": body["code"], "param": None
    }, envelope  # fmt: skip
    return body


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even if it is killed, so no
    server outlives an interrupted run (Linux only; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real ``hypercorn ddx_llm:app`` process on a loopback port.

    ``args`` are extra Hypercorn arguments (``-k trio``, ``--certfile ...``).  The process runs in
    ``cwd`` with the given environment additions; its output goes to ``log_path``.
    """

    def __init__(
        self,
        conf_dir: Path,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        scheme: str = "http",
        log_path: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.conf_dir = conf_dir
        self.args = args
        self.env = {**os.environ, "DDX_LLM_CONF_DIR": str(conf_dir), **(env or {})}
        self.log_path = log_path or conf_dir.parent / f"hypercorn-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(
        self, ready_path: str = "/health", timeout: float = 60.0, verify: Any = True
    ) -> LiveServer:
        command = [
            sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}",
            "--graceful-timeout", "2", *self.args, "ddx_llm:app",
        ]  # fmt: skip
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hypercorn exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + ready_path, verify=verify, timeout=2).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hypercorn did not answer in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> LiveServer:
        return self if self.process else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
