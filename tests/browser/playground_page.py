"""The playground page as the browser tests use it: start servers, open the page, ask, read
the answer.  The selectors are the page's own ids and data attributes (see
ddx_llm/plugins/playground/static/)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser.playwright_driver import Browser, chromium_path, node_with_playwright
from support import LiveServer

ANSWER = "#transcript article.assistant:last-of-type"
"""The latest answer."""


def screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save their screenshots: ``PLAYGROUND_SCREENSHOTS`` if set (to refresh
    docs/playground.png), else ``playground-screenshots`` in pytest's temporary folder (its
    path is printed)."""
    default = tmp_path_factory.getbasetemp() / "playground-screenshots"
    folder = Path(os.environ.get("PLAYGROUND_SCREENSHOTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"playground screenshots: {folder}")
    return folder


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """Debian's chromium through playwright-core (skips, or fails under CI, without them)."""
    with Browser(node_with_playwright(), chromium_path()) as started:
        yield started


@contextmanager
def live_server(conf_dir: Path, worker: str, *args: str, env: dict[str, str] | None = None):
    """A Hypercorn process on ``conf_dir`` with worker ``worker``; only ``env``'s DDX_LLM_*
    variables reach it (module-scoped fixtures cannot use the autouse clean-up)."""
    server = LiveServer(conf_dir, args=("-k", worker, *args), env=env)
    keep = {"DDX_LLM_CONF_DIR", *(env or {})}
    server.env = {k: v for k, v in server.env.items() if not k.startswith("DDX_LLM_") or k in keep}
    server.start()
    try:
        yield server
    finally:
        server.stop()


def open_playground(browser: Browser, url: str, page: str = "main") -> dict[str, Any]:
    """Open the page in a new tab and wait until it has the registry and the health."""
    opened = browser.open(url, page=page)
    assert opened["status"] == 200, opened
    browser.wait("body[data-ready=true]", page=page)
    browser.wait("#health:not([data-status=unknown])", page=page)
    return opened


def set_params(browser: Browser, **fields: Any) -> None:
    """``scenario``, ``delay``, ``max_tokens``, ``temperature``, ``stream``, ``format``,
    ``schema``, ``tools``, ``system``: the parameters panel's fields."""
    inputs = {
        "delay": "#p-mock-delay", "max_tokens": "#p-max-tokens", "system": "#p-system",
        "schema": "#p-schema", "tools": "#p-tools",
    }  # fmt: skip
    for name in fields:  # the tools and response format fields are folded away at first
        if name in ("format", "schema", "tools"):
            browser.eval(
                "() => document.querySelectorAll('#params details').forEach(d => d.open = true)"
            )
    for name, value in fields.items():
        if name == "scenario":
            browser.call("select", selector="#p-mock-scenario", value=value)
        elif name == "format":
            browser.call("select", selector="#p-format", value=value)
        elif name == "stream":
            browser.call("check", selector="#p-stream", checked=value)
        elif name == "temperature":
            browser.call("check", selector="#p-temperature-set", checked=True)
            browser.call("fill", selector="#p-temperature", value=str(value))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            browser.call("fill", selector=inputs[name], value=text)


def ask(browser: Browser, text: str) -> None:
    """Type ``text`` and press Send (the answer is then ``ANSWER``)."""
    browser.call("fill", selector="#prompt", value=text)
    browser.call("click", selector="#send")


def wait_answer(browser: Browser, state: str = "done", timeout: float = 20000) -> dict[str, Any]:
    """Wait until the latest answer is in ``state``; its fields, state and data attributes."""
    browser.wait(f"{ANSWER}[data-state={state}]", timeout=timeout)
    return answer_fields(browser)


def answer_fields(browser: Browser) -> dict[str, Any]:
    return browser.eval(
        """(selector) => {
            const node = document.querySelector(selector);
            const fields = {};
            for (const field of node.querySelectorAll("[data-field]")) {
                fields[field.dataset.field] = field.textContent;
            }
            const calls = [...node.querySelectorAll(".tool-call")].map((call) => ({
                name: call.querySelector(".fn").textContent,
                arguments: call.querySelector(".args").textContent,
                id: call.querySelector(".id")?.textContent ?? null,
            }));
            const reasoning = node.querySelector("details.reasoning");
            const data = { ...node.dataset };
            return { ...fields, calls, data, reasoningShown: !reasoning.hidden };
        }""",
        ANSWER,
    )


def health(server: LiveServer, prefix: str = "") -> dict[str, Any]:
    return httpx.get(server.url + prefix + "/health", timeout=10).json()


def wait_idle(server: LiveServer, limit: float = 10.0, prefix: str = "") -> float:
    """Seconds until ``/health`` says nothing runs or waits (fails after ``limit``)."""
    started = time.monotonic()
    while True:
        requests = health(server, prefix)["requests"]
        if requests == {"running": 0, "waiting": 0}:
            return time.monotonic() - started
        assert time.monotonic() - started < limit, f"still busy: {requests}"
        time.sleep(0.02)


def page_problems(browser: Browser, *, expected: tuple[str, ...] = ()) -> list[str]:
    """Uncaught errors of the page, and console errors other than failed responses whose
    status is among ``expected`` (an API error the test provoked: the browser logs those)."""
    log = browser.call("log")
    problems = [entry["text"] for entry in log["errors"]]
    for entry in log["console"]:
        if not any(f"status of {status}" in entry["text"] for status in expected):
            problems.append(entry["text"])
    return problems
