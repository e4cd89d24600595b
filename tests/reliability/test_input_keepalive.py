"""Early refusals keep the connection usable: after a 401, 413 or 415 decided before the body
was read, the client's next request on the same connection works — over HTTP/1.1 (the rest of
the body is drained, or the answer says ``Connection: close``) and HTTP/2 (the stream ends only
after the request has: Hypercorn 0.18 would otherwise crash the connection, or under trio the
whole server).  httpx clients reusing one connection against a real Hypercorn, asyncio and trio.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from support import LiveServer, write_conf

from ddx_llm.middleware.framing import DRAIN_SECONDS

pytestmark = pytest.mark.live

CHAT = "/v1/chat/completions"
KEY = "sk-keepalive-0123456789"
LIMIT = 4000
ROUNDS = 10
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(params=["asyncio", "trio"])
def server(request, conf_dir):
    write_conf(conf_dir, {"core": {"max_body_bytes": LIMIT}})
    with LiveServer(conf_dir, args=("-k", request.param), env={"DDX_LLM_API_KEYS": KEY}) as live:
        yield live


@pytest.fixture(params=["h1", "h2"])
def client(request, server) -> Iterator[httpx.Client]:
    h2 = request.param == "h2"
    with httpx.Client(base_url=server.url, http1=not h2, http2=h2, timeout=10) as client:
        yield client


def slowly(*parts: bytes) -> Iterator[bytes]:
    """A body arriving in pieces, so the answer can come before its end."""
    for part in parts:
        yield part
        time.sleep(0.1)


def local_port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"content-type": "application/json"}, 401),  # no key: auth refuses from the headers
     ({"authorization": f"Bearer {KEY}", "content-type": "text/plain"}, 415)],
)  # fmt: skip
def test_the_next_request_on_the_connection_works_after_an_early_refusal(
    client, server, headers, status
):
    ports = set()
    for _ in range(ROUNDS):
        refused = client.post(CHAT, content=slowly(BODY[:10], BODY[10:]), headers=headers)
        assert refused.status_code == status
        assert "connection" not in refused.headers  # drained: the connection stays open
        after = client.get("/health")
        assert after.status_code == 200
        ports.add(local_port(refused))
        ports.add(local_port(after))
    assert len(ports) == 1  # every request used the same connection
    assert "Traceback" not in server.log()


def test_a_body_over_the_limit_closes_http1_and_spares_http2(client, server):
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (3 * LIMIT) + b'"}]}'
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    for _ in range(3):
        refused = client.post(CHAT, content=big, headers=headers)  # Content-Length > limit
        assert refused.status_code == 413
        assert refused.json()["code"] == "request_too_large"
        if refused.http_version == "HTTP/1.1":
            assert refused.headers["connection"] == "close"  # too much to drain: say so
        else:
            assert "connection" not in refused.headers  # forbidden in HTTP/2
        assert client.get("/health").status_code == 200
    assert "Traceback" not in server.log()


def test_a_stalled_body_after_an_early_refusal_gets_connection_close(server):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + b'{"mess')
        started = time.monotonic()
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
        waited = time.monotonic() - started
    assert raw.startswith(b"HTTP/1.1 401 ")
    assert b"\r\nconnection: close\r\n" in raw.lower()
    assert DRAIN_SECONDS - 0.5 < waited < DRAIN_SECONDS + 3
