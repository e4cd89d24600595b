"""How a request arrives, over raw sockets against a real Hypercorn (h11 and h2c; asyncio and
trio workers): request smuggling, a body that stops, headers that trickle, control bytes in the
request id, a client that leaves mid-body.  Loopback only; every socket has a timeout.
"""

from __future__ import annotations

import json
import socket
import time
import tomllib
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from support import ROOT, LiveServer, write_conf

pytestmark = pytest.mark.live

CHAT = "/v1/chat/completions"
BODY_TIMEOUT = 1.5
HIDDEN = b"GET /smuggled-request HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(params=["asyncio", "trio"])
def worker(request) -> str:
    return request.param


@pytest.fixture
def server(conf_dir: Path, worker: str):
    write_conf(conf_dir, {"core": {"body_timeout_seconds": BODY_TIMEOUT}})
    config = ("--config", str(conf_dir / "hypercorn.toml"))
    with LiveServer(conf_dir, args=(*config, "-k", worker)) as live:
        yield live


def converse(port: int, *parts: bytes, pause: float = 0, wait: float = 10) -> tuple[bytes, float]:
    """Send ``parts`` (``pause`` s apart), then read until the server closes; the bytes read
    and the seconds from the last send to the close (a read past ``wait`` fails the test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
        sent = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - sent


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP/1.1 responses in ``raw`` (each with a Content-Length body)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        size = int(headers.get("content-length", 0))
        found.append((int(status_line.split()[1]), headers, rest[:size]))
        raw = rest[size:]
    return found


def test_content_length_with_transfer_encoding_is_refused_and_closed(server):
    """Each attempt gets one answer at most — our 400 with Connection: close — then the
    connection closes; the request hidden after the chunked body is never served."""
    body = b"0\r\n\r\n" + HIDDEN
    request = (
        b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
    ) + body
    refused = 0
    for _ in range(5):
        raw, _ = converse(server.port, request)
        answers = responses(raw)
        assert len(answers) <= 1, raw  # the hidden request got no answer
        for status, headers, payload in answers:
            assert (status, headers["connection"]) == (400, "close")
            assert json.loads(payload)["code"] == "bad_request"
            assert "x-request-id" in headers
            refused += 1
    assert refused >= 1
    time.sleep(0.2)
    log = server.log()
    assert "/smuggled-request" not in log
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


def test_a_body_that_stops_gets_408_then_the_connection_closes(server):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    raw, waited = converse(server.port, head, b'{"messages": [')
    [(status, headers, payload)] = responses(raw)
    assert (status, headers["connection"]) == (408, "close")
    assert json.loads(payload)["code"] == "request_timeout"
    assert BODY_TIMEOUT - 0.5 < waited < BODY_TIMEOUT + 3


def test_the_same_over_h2_ends_the_stream_with_408(server):
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"POST"), (b":path", CHAT.encode()),
                            (b":scheme", b"http"), (b":authority", b"x"),
                            (b"content-type", b"application/json")])  # fmt: skip
    client.send_data(1, b'{"messages": [')
    status = None
    with socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT + 5) as sock:
        sock.sendall(client.data_to_send())
        started = time.monotonic()
        while status is None:
            for event in client.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
            sock.sendall(client.data_to_send())
        assert status == b"408"
        assert time.monotonic() - started >= BODY_TIMEOUT - 0.5
        client.end_stream(1)  # the stream ends once the request has: Hypercorn then lives on
        sock.sendall(client.data_to_send())
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200


def trickle(port: int, data: bytes, every: float) -> tuple[bytes, float]:
    """Send ``data`` one byte every ``every`` s until the server closes; what it sent back and
    the seconds until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(every)
        started = time.monotonic()
        received = b""
        try:
            for byte in data:
                sock.sendall(bytes([byte]))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                received += chunk
                if not chunk:
                    break
        except OSError:  # reset while sending: closed as well
            pass
        return received, time.monotonic() - started


def test_headers_that_trickle_are_cut_by_the_keep_alive_timeout(conf_dir, tmp_path, worker):
    """The request head is bounded by Hypercorn's keep_alive_timeout (1 s here, 30 s shipped):
    the connection is closed without a response, since the app has not been called."""
    config = tmp_path / "hypercorn.toml"
    shipped = (conf_dir / "hypercorn.toml").read_text()
    config.write_text(shipped.replace("keep_alive_timeout = 30.0", "keep_alive_timeout = 1.0"))
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40  # 20 s at 4 bytes/s
    with LiveServer(conf_dir, args=("--config", str(config), "-k", worker)) as live:
        received, closed_after = trickle(live.port, head, every=0.25)
    assert received == b""
    assert 0.9 < closed_after < 3


def test_the_shipped_server_settings_bound_the_request_head():
    shipped = tomllib.loads((ROOT / "conf" / "hypercorn.toml").read_text())
    assert 0 < shipped["keep_alive_timeout"] <= 60
    assert shipped["h11_max_incomplete_size"] == 16384
    assert shipped["h2_max_header_list_size"] == 65536
    assert "read_timeout" not in shipped  # it would cut long streams (a per-read timeout)


@pytest.mark.parametrize("byte", [b"\r", b"\x00"])
def test_cr_or_nul_in_the_request_id_is_refused_by_the_server_layer(server, byte):
    """h11 refuses the head before the app runs: Hypercorn's own 400, an empty body and
    Connection: close; not our shape (nothing of ours runs), documented in RELIABILITY.md."""
    raw, _ = converse(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: a" + byte
                      + b"b\r\n\r\n")  # fmt: skip
    [(status, headers, payload)] = responses(raw)
    assert (status, headers["connection"], headers["content-length"], payload) == (
        400, "close", "0", b""
    )  # fmt: skip
    assert "x-request-id" not in headers


@pytest.mark.parametrize("byte", [b"\r", b"\x00"])
def test_cr_or_nul_in_a_header_over_h2_ends_the_connection_with_goaway(server, byte):
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                       normalize_outbound_headers=False)  # fmt: skip
    client = h2.connection.H2Connection(config)
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"GET"), (b":path", b"/health"), (b":scheme", b"http"),
                            (b":authority", b"x"), (b"x-request-id", b"a" + byte + b"b")],
                        end_stream=True)  # fmt: skip
    seen = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(client.data_to_send())
        while not any(isinstance(e, h2.events.ConnectionTerminated) for e in seen):
            data = sock.recv(65536)
            assert data, seen
            seen += client.receive_data(data)
    goaway = next(e for e in seen if isinstance(e, h2.events.ConnectionTerminated))
    assert goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in seen)
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200  # the server lives


def test_other_control_bytes_in_the_request_id_get_a_fresh_id(server):
    raw, _ = converse(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"X-Request-ID: a\x01b\x7f\r\n\r\n")  # fmt: skip
    [(status, headers, _)] = responses(raw)
    assert status == 200
    assert len(headers["x-request-id"]) == 32 and headers["x-request-id"].isalnum()


def test_a_client_that_leaves_mid_body_is_counted_499_without_an_error(server):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n"
    )
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + b'{"messages": [')
            time.sleep(0.2)
    deadline = time.monotonic() + 5
    while server.log().count("-> 499 client_closed") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()
    assert log.count("-> 499 client_closed") == 3, log[-3000:]
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    counted = [line for line in httpx.get(server.url + "/metrics", timeout=5).text.splitlines()
               if line.startswith("ddx_llm_requests_total{") and CHAT in line]  # fmt: skip
    assert any('status="499"' in line and line.endswith(" 3.0") for line in counted), counted
    assert not any('status="500"' in line for line in counted), counted
