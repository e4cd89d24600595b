"""Abuse of the auth plugin against a real server: keys smuggled past the access-log redaction
in the query string, and a production deployment started without keys.

Live (real Hypercorn processes on loopback ports, mock backend); bounded: every request has a
timeout, every process is stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, unquote_plus

import httpx
import pytest
from support import ROOT, LiveServer, _die_with_parent, copy_project_conf, free_port

pytestmark = pytest.mark.live

KEY = "Kq;9?x=Z~w+y/a-b_c.d*e'f!g%h&i#j"
"""Holds every character a query treats specially; ``,``-free (DDX_LLM_API_KEYS splits at it)."""
WRONG = "sk-wrong-5555555555555555"
MUST_ESCAPE = set("&#%+ ")
NAME = "api_key"
ACCESS_FORMAT = "ACCESS %(s)s R=%(R)s Uq=%(Uq)s q=%(q)s ref=%({referer}i)s"


def escape(text: str, chosen: set[int], lower: bool) -> str:
    """``text`` with the characters at ``chosen`` (and those that must be) percent-encoded."""
    out = []
    for index, char in enumerate(text):
        if index in chosen or char in MUST_ESCAPE:
            escaped = f"%{ord(char):02X}"
            out.append(escaped.lower() if lower else escaped)
        else:
            out.append(char)
    return "".join(out)


def spellings() -> list[tuple[str, str, bool]]:
    """``(query, raw value, authenticates)``: every one of the 128 ways of percent-encoding some
    letters of ``api_key`` (upper- or lower-case hex by turns), each with the key spelt one of
    four ways, then repeated, empty, decoy and case-changed fields."""
    values = [
        escape(KEY, set(), False),
        escape(KEY, set(range(len(KEY))), False),
        escape(KEY, set(range(len(KEY))), True),
        escape(KEY, set(range(0, len(KEY), 2)), True),
    ]
    cases = []
    for mask in range(2 ** len(NAME)):
        chosen = {bit for bit in range(len(NAME)) if mask >> bit & 1}
        name = escape(NAME, chosen, lower=mask % 2 == 1)
        value = values[mask % len(values)]
        cases.append((f"{name}={value}", value, True))
    value = values[1]
    cases += [
        (f"api_key=&%61pi%5Fkey={value}&api_key={WRONG}", value, True),  # the first non-empty
        (f"x=1&&api%5fkey={value}&flag", value, True),
        (f"api_key={values[3]}&api_key={values[0]}", values[3], True),
        (f"API_KEY={value}", value, False),  # not the parameter: refused, redacted anyway
        (f"x=1;api_key={value}", value, False),  # ';' is no separator: refused, redacted anyway
    ]
    return cases


def raw_post(port: int, target: str) -> int:
    """POST a chat request to ``target`` exactly as written (no client re-encoding); the
    response's status."""
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    request = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Referer: http://localhost:3100/page?{target.partition('?')[2]}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return int(received.split(b" ", 2)[1])


def leaked(log: str, raw_values: set[str]) -> list[str]:
    texts = (log, unquote(log), unquote_plus(log))
    forms = ("clear", "percent-decoded", "plus-decoded")
    found = [f"key {form}" for form, text in zip(forms, texts, strict=True) if KEY in text]
    return found + [raw for raw in raw_values if raw in log]


@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_no_spelling_of_a_query_key_reaches_the_access_log(tmp_path: Path, worker: str):
    """Every spelling of ``?api_key=`` that authenticates (137 of them) is answered 200, and
    Hypercorn's access log, in a format printing the query four ways, holds no trace of the
    key: not in clear, not percent-encoded, not the raw value it travelled in."""
    conf = copy_project_conf(tmp_path / "conf")
    args = ("-k", worker, "--access-logfile", "-", "--access-logformat", ACCESS_FORMAT)
    cases = spellings()
    with LiveServer(conf, args=args, env={"DDX_LLM_API_KEYS": KEY}) as server:
        statuses = [raw_post(server.port, f"/v1/chat/completions?{q}") for q, _, _ in cases]
    log = server.log()  # complete once the server has stopped (stdout is block-buffered)
    assert statuses == [200 if authenticates else 401 for _, _, authenticates in cases]
    lines = [line for line in log.splitlines() if "ACCESS " in line and "/v1/chat" in line]
    # (Hypercorn's trio worker logs each of these requests twice, once with status "-")
    assert sum(" ACCESS 200 " in line or " ACCESS 401 " in line for line in lines) == len(cases)
    assert all(line.count("[redacted]") >= 4 for line in lines)  # R, Uq, q and the Referer
    assert leaked(log, {raw for _, raw, _ in cases}) == []


# --- production without keys ---------------------------------------------------------------


def serve(conf: Path, env: dict[str, str], *command: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DDX_LLM_")}
    environment.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "ddx_llm.cli", "--conf", str(conf), *command],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,  # no server outlives an interrupted run
    )


@pytest.mark.parametrize("command", ["serve", "check"])
def test_production_without_keys_refuses_to_start_with_exit_2(tmp_path: Path, command: str):
    conf = copy_project_conf(tmp_path / "conf")
    port = free_port()
    extra = ("--bind", f"127.0.0.1:{port}") if command == "serve" else ()
    process = serve(conf, {"DDX_LLM_ENV": "prod"}, command, *extra)
    try:
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ddx-llm: configuration error:")
    assert "DDX_LLM_API_KEYS" in lines[0] and "DDX_LLM_ALLOW_NO_AUTH" in lines[0]
    with pytest.raises(httpx.ConnectError):  # nothing ever listened
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.parametrize(
    "env",
    [{"DDX_LLM_ALLOW_NO_AUTH": "1"}, {"DDX_LLM_API_KEYS": "sk-prod-0123456789abcdef"}],
    ids=["allowed-explicitly", "with-a-key"],
)
def test_production_starts_with_keys_or_when_told_it_wants_no_auth(tmp_path: Path, env):
    conf = copy_project_conf(tmp_path / "conf")
    port = free_port()
    process = serve(conf, {"DDX_LLM_ENV": "prod", **env}, "serve", "--bind", f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, process.returncode
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        chat = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert health.status_code == 200
    assert chat.status_code == (200 if "DDX_LLM_ALLOW_NO_AUTH" in env else 401)
    assert process.returncode == 0, err
    if "DDX_LLM_ALLOW_NO_AUTH" in env:
        assert "auth is off in production" in err + out
