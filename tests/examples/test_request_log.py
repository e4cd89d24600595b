"""``examples/request_log.py`` copied into a conf's drop-in folder, as its docstring says to.

The app runs in process (``ddx_llm.testing``) with auth on, on asyncio and trio.  The JSON lines
are read once the app has shut down (its lifespan stops the writer thread after the last line).
A client leaving mid-stream is played at the ASGI level: httpx's in-process transport reads a
whole response before returning, so it cannot leave early.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import ROOT, LiveServer, write_conf

from ddx_llm import testing
from ddx_llm.config import ConfigError

pytestmark = pytest.mark.anyio

EXAMPLE = ROOT / "examples" / "request_log.py"
CHAT = "/v1/chat/completions"
KEYS = {"alice": "alice-secret-key", "anonymous-key": "an-unnamed-key"}
WORDS = "one two three four five six seven eight nine ten"
ECHO = {"messages": [{"role": "user", "content": WORDS}], "mock": {"scenario": "echo"}}


def identity(key: str) -> str:
    """The identity ddx-llm's auth gives an unnamed key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture
def log_file(conf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The drop-in installed in ``conf_dir``'s plugins folder, writing to the returned file;
    auth on with a named key (alice) and an unnamed one."""
    shutil.copy(EXAMPLE, conf_dir.parent / "plugins" / "request_log.py")
    path = conf_dir.parent / "logs" / "requests.jsonl"
    write_conf(conf_dir, {"request_log": {"file": "logs/requests.jsonl"}})  # project-relative
    digest = hashlib.sha256(KEYS["alice"].encode()).hexdigest()
    monkeypatch.setenv("DDX_LLM_API_KEYS", KEYS["anonymous-key"])
    monkeypatch.setenv("DDX_LLM_API_KEY_DIGESTS", json.dumps({"alice": f"sha256:{digest}"}))
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines of the log file (none while it does not exist)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


async def test_one_line_per_request_with_the_id_identity_and_usage(log_file):
    async with testing.serve(log_file.parents[1] / "conf") as service:
        plain = await service.client.post(CHAT, json=ECHO, headers=as_("alice"))
        streamed = await service.client.post(
            CHAT,
            json={**ECHO, "stream": True, "stream_options": {"include_usage": True}},
            headers={**as_("anonymous-key"), "X-Request-ID": "client-chosen.id-1"},
        )
        tool_call = await service.client.post(
            CHAT, json={"messages": ECHO["messages"]}, headers=as_("alice")
        )
        refused = await service.client.post(CHAT, json=ECHO)  # no key: 401, never generated
    assert [plain.status_code, streamed.status_code, tool_call.status_code] == [200] * 3
    assert refused.status_code == 401
    assert streamed.headers["x-request-id"] == "client-chosen.id-1"
    chunks = sse_events(streamed.text)
    logged = lines(log_file)
    assert len(logged) == 3  # one per request that reached the model, in order

    for line, response, client in [
        (logged[0], plain, "alice"),
        (logged[1], streamed, identity(KEYS["anonymous-key"])),
        (logged[2], tool_call, "alice"),
    ]:
        assert line["request_id"] == response.headers["x-request-id"]
        assert line["client"] == client
        assert (line["method"], line["route"], line["surface"]) == (
            "POST", CHAT, "chat.completions"
        )  # fmt: skip
        assert line["outcome"] == "done"
        assert line["latency_ms"] >= 0
        assert line["time"].endswith("Z")
    usage = plain.json()["usage"]
    assert logged[0]["model"] == plain.json()["model"]
    assert logged[0]["finish_reason"] == "stop"
    assert (logged[0]["prompt_tokens"], logged[0]["completion_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"]
    )  # fmt: skip
    assert logged[0]["total_tokens"] == usage["total_tokens"]
    assert logged[1]["model"] == chunks[0]["model"]
    assert logged[1]["finish_reason"] == "stop"
    assert logged[1]["completion_tokens"] == chunks[-1]["usage"]["completion_tokens"]
    assert logged[1]["prompt_tokens"] == chunks[-1]["usage"]["prompt_tokens"]
    assert logged[2]["finish_reason"] == "tool_calls"
    assert logged[2]["completion_tokens"] == tool_call.json()["usage"]["completion_tokens"]


async def test_failures_are_logged_with_finish_reason_error(log_file):
    failing = {**ECHO, "mock": {"scenario": "error"}}
    async with testing.serve(log_file.parents[1] / "conf", headers=as_("alice")) as service:
        plain = await service.client.post(CHAT, json=failing)
        streamed = await service.client.post(CHAT, json={**failing, "stream": True})
    assert plain.status_code == 500
    assert plain.json()["code"] == "llm_error"
    assert sse_events(streamed.text)[-1]["error"]["code"] == "llm_error"  # in-band, status 200
    logged = lines(log_file)
    assert [line["request_id"] for line in logged] == [
        plain.headers["x-request-id"], streamed.headers["x-request-id"]
    ]  # fmt: skip
    for line in logged:
        assert (line["finish_reason"], line["client"]) == ("error", "alice")
        assert line["completion_tokens"] == 2  # the mock's two words before it fails


async def test_a_client_leaving_mid_stream_is_cancelled_and_one_turned_away_is_rejected(
    log_file,
):
    write_conf(log_file.parents[1] / "conf", {"core": {"max_running": 1, "max_waiting": 0}})
    slow = {**ECHO, "mock": {"scenario": "echo", "token_delay_ms": 50}}
    async with testing.serve(log_file.parents[1] / "conf") as service:
        stream = service.stream("POST", CHAT, json={**slow, "stream": True}, headers=as_("alice"))
        async with stream as response:
            chunks = []
            async for chunk in response:  # leave after the first piece
                chunks.append(chunk)
                break
            assert service.app.host.admission.running == 1
            # the one generating slot is taken and nobody may wait: this one is turned away
            overloaded = await service.client.post(CHAT, json=ECHO, headers=as_("alice"))
    assert overloaded.status_code == 503
    assert overloaded.json()["code"] == "overloaded"
    assert response.status == 200
    assert 0 < len(chunks) < len(WORDS.split())  # it left before the end
    logged = {line["request_id"]: line for line in lines(log_file)}
    assert len(logged) == 2
    cancelled = logged[response.headers["x-request-id"]]
    assert (cancelled["finish_reason"], cancelled["client"]) == ("cancelled", "alice")
    assert 0 < cancelled["completion_tokens"] < len(WORDS.split())
    rejected = logged[overloaded.headers["x-request-id"]]
    assert rejected["outcome"] == "rejected"
    assert rejected["code"] == "overloaded"
    assert rejected["client"] == "alice"
    assert "finish_reason" not in rejected


async def test_lines_can_go_to_a_logger_instead_of_a_file(log_file):
    conf = log_file.parents[1] / "conf"
    write_conf(conf, {"request_log": {"file": "", "logger": "tests.request_log"}})
    records: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("tests.request_log")
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)
    try:
        async with testing.serve(conf, headers=as_("alice")) as service:
            response = await service.client.post(CHAT, json=ECHO)
    finally:
        logger.removeHandler(collector)
    assert not log_file.exists()  # no file configured
    assert len(records) == 1
    record = records[0]
    assert (record.name, record.levelno) == ("tests.request_log", logging.INFO)
    assert record.request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]
    line = json.loads(record.getMessage())
    assert (line["request_id"], line["client"]) == (response.headers["x-request-id"], "alice")


async def test_its_settings_are_validated_at_start_up(log_file):
    conf = log_file.parents[1] / "conf"
    write_conf(conf, {"request_log": {"file": "", "logger": ""}})
    with pytest.raises(ConfigError, match=r"\[request_log\].*the lines would go nowhere"):
        async with testing.serve(conf):
            pass


async def test_surfaces_choose_what_is_logged(log_file):
    conf = log_file.parents[1] / "conf"
    write_conf(conf, {"request_log": {"surfaces": ["responses"]}})
    async with testing.serve(conf, headers=as_("alice")) as service:
        response = await service.client.post(CHAT, json=ECHO)
    assert response.status_code == 200
    assert log_file.read_text(encoding="utf-8") == ""  # the file exists; no chat line in it


def test_plugins_command_lists_it_as_a_drop_in(log_file):
    conf = log_file.parents[1] / "conf"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ddx-llm")), "--conf", str(conf), "plugins"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listing = result.stdout.splitlines()
    entry = listing.index(f"request_log  [dropin {conf.parent / 'plugins' / 'request_log.py'}]")
    assert listing[entry + 1] == "    hooks: ddx_llm_lifespan, ddx_llm_observe, ddx_llm_settings"


@pytest.mark.live
def test_a_real_server_logs_a_client_that_hangs_up(log_file):
    """Hypercorn's trio worker, a real socket closed mid-stream: the line says ``cancelled``,
    written while the server runs (not only at shutdown)."""
    slow = {**ECHO, "stream": True, "mock": {"scenario": "echo", "token_delay_ms": 200}}
    env = {name: os.environ[name] for name in ("DDX_LLM_API_KEYS", "DDX_LLM_API_KEY_DIGESTS")}
    with LiveServer(log_file.parents[1] / "conf", args=("-k", "trio"), env=env) as server:
        with httpx.Client(base_url=server.url, headers=as_("alice"), timeout=10) as client:
            done = client.post(CHAT, json=ECHO)
            with client.stream("POST", CHAT, json=slow) as stream:
                next(stream.iter_raw())  # the first chunk, then hang up
                request_id = stream.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while len(logged := lines(log_file)) < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    assert logged[0]["request_id"] == done.headers["x-request-id"]
    assert logged[0]["finish_reason"] == "stop"
    assert logged[1]["request_id"] == request_id
    assert (logged[1]["finish_reason"], logged[1]["client"]) == ("cancelled", "alice")
