"""The service under a real Hypercorn process: HTTP/1.1, h2c, h2 over TLS, asyncio and trio
workers, streaming, and a client that leaves mid-stream."""

from __future__ import annotations

import json
import ssl
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import trustme
from openai_schemas import validate
from support import LiveServer, write_conf

pytestmark = pytest.mark.live

CHAT = "/v1/chat/completions"
ECHO = {"scenario": "echo"}

OBSERVER = textwrap.dedent(
    '''
    """Test drop-in: appends every RequestDone event to the file named by DDX_TEST_EVENTS."""
    import dataclasses, json, os, time
    from ddx_llm import hookimpl
    from ddx_llm.events import RequestDone

    @hookimpl
    def ddx_llm_observe(event):
        if isinstance(event, RequestDone):
            with open(os.environ["DDX_TEST_EVENTS"], "a") as handle:
                handle.write(json.dumps({**dataclasses.asdict(event), "at": time.time()}) + "\\n")
    '''
)


@pytest.fixture(params=["asyncio", "trio"])
def worker(request) -> str:
    return request.param


@pytest.fixture
def events_file(conf_dir: Path, tmp_path: Path) -> Path:
    """A drop-in observer plugin recording RequestDone events, enabled in conf_dir."""
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "record_done.py").write_text(OBSERVER)
    write_conf(conf_dir, {"core": {"plugins_dir": str(plugins)}})
    return tmp_path / "events.jsonl"


@pytest.fixture
def server(conf_dir, events_file, worker):
    live = LiveServer(
        conf_dir,
        args=("-k", worker),
        env={"DDX_LLM_TEST": "1", "DDX_TEST_EVENTS": str(events_file)},
    )
    with live:
        yield live


def chunks_of(text: str) -> list[dict]:
    payloads = [b.removeprefix("data: ") for b in text.strip().split("\n\n")]
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def test_http11_chat_and_health(server):
    with httpx.Client(base_url=server.url) as client:
        health = client.get("/health")
        assert health.http_version == "HTTP/1.1"
        assert health.json()["status"] == "ok"
        body = client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]}).json()
        validate("CreateChatCompletionResponse", body)
        assert client.get("/v1/completions").json()["code"] == "not_found"


def test_h2c_prior_knowledge_streams(server):
    with httpx.Client(base_url=server.url, http1=False, http2=True) as client:
        request = {
            "messages": [{"role": "user", "content": "over h2c"}],
            "stream": True,
            "mock": ECHO,
        }
        with client.stream("POST", CHAT, json=request) as response:
            assert response.http_version == "HTTP/2"
            assert response.headers["content-type"].startswith("text/event-stream")
            text = response.read().decode()
    chunks = chunks_of(text)
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "over h2c"


def test_streams_that_finish_log_no_disconnect(server):
    """A stream that ends normally is not a client leaving: no false alarm in the log (trio's
    Hypercorn reports the disconnect while the last message is still being sent)."""
    request = {"messages": [{"role": "user", "content": "one two"}], "stream": True, "mock": ECHO}
    for http2 in (False, True):
        with httpx.Client(base_url=server.url, http1=not http2, http2=http2) as client:
            for _ in range(5):
                with client.stream("POST", CHAT, json=request) as response:
                    assert response.read().decode().endswith("data: [DONE]\n\n")
    time.sleep(0.5)  # let the server write its log
    assert "disconnected mid-stream" not in server.log()


def test_h2_over_tls_with_alpn(conf_dir, tmp_path, worker):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(cafile=str(ca_path))
    args = ("-k", worker, "--certfile", str(cert_path), "--keyfile", str(key_path))
    with LiveServer(conf_dir, args=args, scheme="https").start(verify=context) as live:
        with httpx.Client(base_url=live.url, http2=True, verify=context) as client:
            health = client.get("/health")
            assert health.http_version == "HTTP/2"
            request = {
                "messages": [{"role": "user", "content": "tls stream"}],
                "stream": True,
                "mock": ECHO,
            }
            with client.stream("POST", CHAT, json=request) as response:
                assert response.http_version == "HTTP/2"
                text = response.read().decode()
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks_of(text))
        == "tls stream"
    )


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
def test_client_leaving_mid_stream_closes_the_generation(server, events_file, http2):
    words = " ".join(f"w{i}" for i in range(60))
    request = {
        "messages": [{"role": "user", "content": words}],
        "stream": True,
        "mock": {"scenario": "echo", "token_delay_ms": 100},
    }
    with httpx.Client(base_url=server.url, http1=not http2, http2=http2) as client:
        with client.stream("POST", CHAT, json=request) as response:
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen += 1
                if seen == 3:
                    break
        left_at = time.time()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        events_file.exists() and events_file.read_text().endswith("\n")
    ):
        time.sleep(0.05)
    done = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert len(done) == 1, done
    assert done[0]["finish_reason"] == "cancelled"
    assert done[0]["completion_tokens"] < 10  # of 60: the generation stopped
    # and promptly: well before the 6 s the whole answer takes (slack for a loaded CI machine)
    assert done[0]["at"] - left_at < 2.5
    with httpx.Client(base_url=server.url) as client:  # the server is fine afterwards
        assert client.get("/readyz").status_code == 200
    assert "client disconnected mid-stream; generation closed" in server.log()


def test_bad_configuration_fails_start_up_with_a_clear_message(conf_dir):
    write_conf(conf_dir, {"core": {"max_body_bytes": "lots"}})
    live = LiveServer(conf_dir)
    with pytest.raises(RuntimeError) as failure:
        live.start(timeout=30)
    assert "[core] max_body_bytes" in str(failure.value)
    assert "DDX_LLM_MAX_BODY_BYTES" in str(failure.value)
