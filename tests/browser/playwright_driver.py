"""The Python side of ``driver.mjs``: a real headless Chromium the tests drive step by step.

:func:`chromium_path` finds Debian's ``chromium`` (``tests/tools/ensure_chromium.sh`` installs
it from tox's ``commands_pre``); :func:`node_with_playwright` finds node and installs the
pinned ``playwright-core`` from this folder's lockfile (``npm ci``) when missing.  Either missing
skips the test, or fails it when ``CI`` is set: there the project's files install both.

:class:`Browser` starts ``node driver.mjs`` (one Chromium with a fresh profile) and sends it
one command at a time; every call has a deadline, so a wedged browser fails a test instead of
hanging the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver.mjs"
CHROMIUM = os.environ.get("DDX_LLM_TEST_CHROMIUM", "/usr/bin/chromium")


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str:
    """The Chromium executable (``DDX_LLM_TEST_CHROMIUM``, default ``/usr/bin/chromium``)."""
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"{CHROMIUM} is missing: run tests/tools/ensure_chromium.sh (Debian's chromium)")
    return CHROMIUM


def packages_installed() -> bool:
    """Every package of this folder's package-lock.json is installed at its locked version."""
    lock = json.loads((HERE / "package-lock.json").read_text())
    for path, meta in lock["packages"].items():
        manifest = HERE / path / "package.json"
        if path and not meta.get("optional"):
            if not manifest.exists():
                return False
            if json.loads(manifest.read_text()).get("version") != meta["version"]:
                return False
    return True


def node_with_playwright() -> str:
    """The node executable, with ``playwright-core`` installed from the lockfile."""
    node, npm = shutil.which("node"), shutil.which("npm")
    version = ""
    if node:
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if not npm or not version.startswith("v") or int(version[1:].split(".")[0]) < 20:
        _missing(f"the browser tests need node >= 20 and npm (node: {version or 'absent'})")
    if not packages_installed():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {HERE} failed:\n{done.stdout}\n{done.stderr}")
    return node


class BrowserError(AssertionError):
    """A command the browser could not carry out (a selector that never appeared, ...)."""


class Browser:
    """One headless Chromium (fresh profile) behind ``driver.mjs``.

    ``call(op, **args)`` sends a command and returns its value; see driver.mjs for the
    operations.  Use as a context manager: the browser and its profile go at the end.
    """

    def __init__(self, node: str, chromium: str, *, deadline: float = 30.0) -> None:
        self.deadline = deadline
        self.profile = tempfile.mkdtemp(prefix="ddx-llm-chromium-")
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            [node, str(DRIVER), chromium, self.profile],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.answers: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.next_id = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.answers.put(line)
        self.answers.put(None)

    def driver_log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def call(self, op: str, *, deadline: float | None = None, **args: Any) -> Any:
        self.next_id += 1
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": self.next_id, "op": op, **args}) + "\n")
        self.process.stdin.flush()
        try:
            line = self.answers.get(timeout=deadline or self.deadline)
        except queue.Empty:
            raise BrowserError(f"the browser did not answer {op} {args} in time") from None
        if line is None:
            raise BrowserError(f"the browser driver exited:\n{self.driver_log()}")
        answer = json.loads(line)
        assert answer["id"] == self.next_id, answer
        if not answer["ok"]:
            raise BrowserError(f"{op} {args}: {answer['error']}")
        return answer["value"]

    # Shorthands for the commands the tests use most.

    def open(self, url: str, page: str = "main", *, fresh: bool = True) -> dict[str, Any]:
        """Load ``url`` in the tab ``page`` — by default a new tab (its own sessionStorage)."""
        return self.call("open", url=url, page=page, fresh=fresh)

    def text(self, selector: str, page: str = "main") -> str:
        return self.call("text", selector=selector, page=page)

    def wait(self, selector: str, timeout: float = 15000, **args: Any) -> None:
        self.call("wait", selector=selector, timeout=timeout, **args)

    def eval(self, js: str, arg: Any = None, page: str = "main") -> Any:
        return self.call("eval", js=js, arg=arg, page=page)

    def screenshot(self, path: Path, page: str = "main") -> Path:
        self.call("screenshot", path=str(path), page=page)
        return path

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrowserError):
                self.call("quit", deadline=10)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
