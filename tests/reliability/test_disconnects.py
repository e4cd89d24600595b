"""Clients that leave at every stage — before their headers are complete, mid-body, in the
queue, during prefill, while waiting for a model load, mid-stream, during a swap — leave
nothing behind: the worker's tasks and threads come back to their count, admission to
``running 0, waiting 0``, ``ddx_llm_requests_in_flight`` to the scrape itself, and every
request that reached the model host ends with exactly one ``RequestRejected`` or
``RequestDone`` (a client that left while queued: ``RequestRejected`` code ``client_closed``).

A drop-in plugin written here gives the server what the tests need through the public plugin
API: the ``slow`` backend (the mock, in real-model mode, with a slow prefill and a slow model
load), ``GET /_test/leaks`` (the worker's task and thread counts) and a record of the request
events.  Live (``ddx-llm serve`` on loopback ports, asyncio and trio); bounded.
"""

from __future__ import annotations

import json
import re
import socket
import textwrap
import time
from collections import Counter
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, write_conf

pytestmark = pytest.mark.live

CHAT = "/v1/chat/completions"
KEEP_ALIVE = 1.5
"""Hypercorn's ``keep_alive_timeout`` in these tests.  Its asyncio worker keeps a keep-alive
connection that the client closed — its socket and three tasks — until this timeout (30 s in
conf/hypercorn.toml); trio releases it at once.  Counts are compared after it."""
OTHER_MODEL = "SmolLM2-135M-Instruct"
WORKERS = pytest.mark.parametrize("worker", ["asyncio", "trio"])

PLUGIN = textwrap.dedent(
    '''
    """Test drop-in of the disconnect suite (see tests/reliability/test_disconnects.py)."""
    import dataclasses, json, os, threading

    import anyio
    from starlette.responses import JSONResponse

    from ddx_llm import hookimpl
    from ddx_llm.events import RequestDone, RequestQueued, RequestRejected
    from ddx_llm.plugins.mock import MockBackend
    from ddx_llm.routing import Route


    class SlowBackend(MockBackend):
        """The mock in real-model mode: a request's prefill takes its vendor field
        ``test_prefill_seconds``, every load but the first (the default model's, at start-up)
        DDX_TEST_LOAD_SECONDS."""

        name = "slow"
        real_model_mode = True
        loads = 0

        async def load(self, entry):
            self.loads += 1
            if self.loads > 1:
                await anyio.sleep(float(os.environ.get("DDX_TEST_LOAD_SECONDS", "0")))
            return entry

        async def prepare(self, handle, entry, request):
            await anyio.sleep(float((request.model_extra or {}).get("test_prefill_seconds", 0)))
            return await super().prepare(handle, entry, request)


    @hookimpl
    def ddx_llm_backends():
        return {"slow": lambda app: SlowBackend(app.settings.section("mock"))}


    async def leaks(request):
        admission = request.app.context.host.admission
        fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        return JSONResponse({
            "tasks": len(anyio.get_running_tasks()),
            "threads": threading.active_count(),
            "fds": fds,
            "running": admission.running,
            "waiting": admission.waiting,
        })


    @hookimpl
    def ddx_llm_routes():
        return [Route("/_test/leaks", leaks, methods=["GET"])]


    @hookimpl
    def ddx_llm_observe(event):
        if isinstance(event, (RequestQueued, RequestRejected, RequestDone)):
            record = {"type": type(event).__name__, **dataclasses.asdict(event)}
            with open(os.environ["DDX_TEST_EVENTS"], "a") as handle:
                handle.write(json.dumps(record) + "\\n")
    '''
)


@pytest.fixture
def events_file(conf_dir: Path, tmp_path: Path) -> Path:
    """The probe plugin in the conf's drop-in folder, the ``slow`` backend chosen; the file
    the plugin writes the request events to."""
    (conf_dir.parent / "plugins" / "disconnect_probe.py").write_text(PLUGIN)
    write_conf(conf_dir, {"core": {"backend": "slow"}})
    return tmp_path / "events.jsonl"


def start(serve, worker: str, events_file: Path, *, warm: tuple[dict, ...] = (), **env: str):
    """The server (Hypercorn's ``keep_alive_timeout`` shortened, see :data:`KEEP_ALIVE`),
    warmed up with one answer of each kind, and its baseline task/thread/fd counts."""
    config = events_file.parent / "hypercorn-disconnects.toml"
    project = (ROOT / "conf" / "hypercorn.toml").read_text()
    config.write_text(
        re.sub(r"(?m)^keep_alive_timeout = .*$", f"keep_alive_timeout = {KEEP_ALIVE}", project)
    )
    server = serve(worker, env={"DDX_TEST_EVENTS": str(events_file), **env}, config=config)
    for body in warm or (chat(2, stream=True), chat(2)):
        assert call("POST", server.url + CHAT, json=body).status_code == 200
    events_file.unlink(missing_ok=True)
    time.sleep(KEEP_ALIVE + 0.5)  # the start-up probes' connections are gone
    server.baseline = settled(server.url, None)
    return server


def chat(words: int, *, stream: bool = False, delay_ms: int = 100) -> dict:
    text = " ".join(f"w{i}" for i in range(words))
    return {
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        "mock": {"scenario": "echo", "token_delay_ms": delay_ms},
    }


def call(method: str, url: str, **kwargs) -> httpx.Response:
    """One request on a connection the server closes (``Connection: close``): a connection
    the client closes would linger on the asyncio worker (:data:`KEEP_ALIVE`) and blur the
    counts."""
    return httpx.request(method, url, headers={"connection": "close"}, timeout=10, **kwargs)


def probe(url: str) -> dict:
    return call("GET", url + "/_test/leaks").json()


def settled(url: str, baseline: dict | None, timeout: float = KEEP_ALIVE + 3) -> dict:
    """Poll until no request runs or waits (and, given a ``baseline``, the task, thread and
    file-descriptor counts are back to it or below); returns the last probe.  Fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        now = probe(url)
        idle = now["running"] == 0 and now["waiting"] == 0
        counts = ("tasks", "threads", "fds")
        same = baseline is None or all((now[k] or 0) <= (baseline[k] or 0) for k in counts)
        if idle and same:
            return now
        assert time.monotonic() < deadline, f"not settled: {now}, baseline {baseline}"
        time.sleep(0.05)


def wait_for(
    url: str, *, running: int | None = None, waiting: int | None = None, within: float = 10
) -> float:
    """Wait (at most ``within`` s) until admission shows the given counts; returns the seconds
    it took."""
    started = time.monotonic()
    while True:
        now = probe(url)
        if (running is None or now["running"] == running) and (
            waiting is None or now["waiting"] == waiting
        ):
            return time.monotonic() - started
        assert time.monotonic() - started < within, now
        time.sleep(0.02)


def in_flight(url: str) -> float:
    text = call("GET", url + "/metrics").text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return sum(s.value for s in samples if s.name == "ddx_llm_requests_in_flight")


def assert_nothing_leaked(server) -> None:
    settled(server.url, server.baseline)
    assert in_flight(server.url) == 1  # the scrape itself


def request_ends(events_file: Path) -> Counter:
    """``(event type, finish reason or code)`` of every request's end; asserts that each
    request queued at the host ended exactly once."""
    records = [json.loads(line) for line in events_file.read_text().splitlines()]
    queued = Counter(r["request"]["id"] for r in records if r["type"] == "RequestQueued")
    ends = [r for r in records if r["type"] != "RequestQueued"]
    ended = Counter(r["request"]["id"] for r in ends)
    assert queued == ended and set(ended.values()) <= {1}, records
    return Counter((r["type"], r.get("finish_reason") or r.get("code")) for r in ends)


def raw_post(port: int, body: dict, *, partial: bool = False) -> socket.socket:
    """An HTTP/1.1 POST written on a raw socket (``partial``: half of its body only)."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + (payload[: len(payload) // 2] if partial else payload))
    return sock


class RawH2:
    """An h2c connection that can open POST streams and reset them (RST_STREAM CANCEL)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.connection.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        self.sock.sendall(self.connection.data_to_send())

    def post(self, body: dict) -> int:
        payload = json.dumps(body).encode()
        stream_id = self.connection.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":path", CHAT.encode()),
            (b":scheme", b"http"),
            (b":authority", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        self.connection.send_headers(stream_id, headers)
        self.connection.send_data(stream_id, payload, end_stream=True)
        self._flush()
        return stream_id

    def reset(self, stream_id: int) -> None:
        self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def close(self) -> None:
        self.sock.close()


def hold_slots(url: str, count: int) -> list[socket.socket]:
    """``count`` long streams (10 s) holding generation slots, on raw sockets to close."""
    port = int(url.rsplit(":", 1)[1])
    held = [raw_post(port, chat(100, stream=True)) for _ in range(count)]
    wait_for(url, running=count)
    return held


# ------------------------------------------------------------------------------ the stages


@WORKERS
def test_clients_leaving_before_headers_or_body_are_complete_leak_nothing(
    serve, worker, events_file
):
    server = start(serve, worker, events_file)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        raw_post(server.port, chat(2), partial=True).close()
    assert_nothing_leaked(server)
    assert not events_file.exists()  # none of them reached the model host


@WORKERS
@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
def test_queued_clients_that_leave_give_their_places_back_at_once(
    conf_dir, serve, worker, http2, events_file
):
    write_conf(conf_dir, {"core": {"max_running": 2, "max_waiting": 4, "max_queue_seconds": 30}})
    server = start(serve, worker, events_file)
    held = hold_slots(server.url, 2)
    if http2:
        h2c = RawH2(server.port)
        streams = [h2c.post(chat(2)) for _ in range(4)]
        wait_for(server.url, waiting=4)
        for stream_id in streams:
            h2c.reset(stream_id)
    else:
        queued = [raw_post(server.port, chat(2)) for _ in range(4)]
        wait_for(server.url, waiting=4)
        for sock in queued:
            sock.close()
    given_back = wait_for(server.url, waiting=0)
    print(f"queue ({worker}, {'h2c' if http2 else 'http1'}): 4 places back in {given_back:.3f} s")
    assert given_back < 1.0, f"places given back after {given_back:.2f} s"

    # the places are real: four fresh clients queue, the fifth is refused (queue full)
    fresh = [raw_post(server.port, chat(2)) for _ in range(4)]
    wait_for(server.url, waiting=4)
    refused = call("POST", server.url + CHAT, json=chat(2))
    assert refused.status_code == 503 and refused.json()["code"] == "overloaded"
    for sock in fresh + held:
        sock.close()
    if http2:
        h2c.close()
    assert_nothing_leaked(server)
    assert request_ends(events_file) == {
        ("RequestRejected", "client_closed"): 8,
        ("RequestRejected", "overloaded"): 1,
        ("RequestDone", "cancelled"): 2,
    }


@WORKERS
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_client_leaving_during_prefill_stops_it(serve, worker, stream, events_file):
    server = start(serve, worker, events_file)
    sock = raw_post(server.port, {**chat(2, stream=stream), "test_prefill_seconds": 30})
    wait_for(server.url, running=1)
    time.sleep(0.2)
    sock.close()
    stopped = wait_for(server.url, running=0)
    print(f"prefill ({worker}, {'sse' if stream else 'json'}): slot back in {stopped:.3f} s")
    assert stopped < 1.0, f"prefill stopped after {stopped:.2f} s"
    assert_nothing_leaked(server)
    assert request_ends(events_file) == {("RequestDone", "cancelled"): 1}


@WORKERS
def test_clients_leaving_during_a_swap_leak_nothing_and_the_swap_completes(
    serve, worker, events_file
):
    """The load's own client and a chat client waiting for the load both leave: the chat
    request gives its slot back at once; the swap, a change of the server's state, completes."""
    server = start(serve, worker, events_file, DDX_TEST_LOAD_SECONDS="2")
    port = server.port
    payload = json.dumps({"model_id": OTHER_MODEL}).encode()
    loader = socket.create_connection(("127.0.0.1", port), timeout=10)
    loader.sendall(
        b"POST /v1/models/load HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    deadline = time.monotonic() + 10
    while call("GET", server.url + "/health").json()["model_state"] != "loading":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    waiting_for_load = [raw_post(port, chat(2)) for _ in range(3)]
    wait_for(server.url, running=3)  # they hold slots while the model loads
    for sock in waiting_for_load:
        sock.close()
    loader.close()
    given_back = wait_for(server.url, running=0)
    print(f"swap ({worker}): 3 slots of clients waiting for the load back in {given_back:.3f} s")
    assert given_back < 1.0
    deadline = time.monotonic() + 10
    while call("GET", server.url + "/v1/models/current").json()["model_id"] != OTHER_MODEL:
        assert time.monotonic() < deadline, "the swap did not complete"
        time.sleep(0.05)
    assert_nothing_leaked(server)
    assert request_ends(events_file) == {("RequestRejected", "client_closed"): 3}
    served = call("POST", server.url + CHAT, json=chat(2, delay_ms=0))  # and it serves
    assert served.json()["model"] == OTHER_MODEL


@WORKERS
@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
def test_clients_leaving_mid_stream_leak_nothing(serve, worker, http2, events_file):
    server = start(serve, worker, events_file)
    if http2:
        h2c = RawH2(server.port)
        streams = [h2c.post(chat(100, stream=True)) for _ in range(3)]
        wait_for(server.url, running=3)
        time.sleep(0.5)  # some tokens out
        for stream_id in streams:
            h2c.reset(stream_id)
    else:
        socks = hold_slots(server.url, 3)
        time.sleep(0.5)
        for sock in socks:
            sock.close()
    stopped = wait_for(server.url, running=0)
    print(f"mid-stream ({worker}, {'h2c' if http2 else 'http1'}): 3 slots back in {stopped:.3f} s")
    assert stopped < 1.0
    if http2:
        h2c.close()
    assert_nothing_leaked(server)
    assert request_ends(events_file) == {("RequestDone", "cancelled"): 3}


# ------------------------------------------------------------------------ a real model


LONG_PROMPT = " ".join(f"Sentence {i} of a long document about sailing cats." for i in range(170))
"""About 2,000 tokens: a prefill of minutes on a slow CPU (MLX's CPU backend runs ~10 prompt
tokens/s there), seconds on Apple silicon."""
FREED_WITHIN = 5.0
"""Seconds after its client left by which a real prefill must have let go of the worker."""


@pytest.mark.model
def test_a_client_leaving_during_a_real_prefill_frees_the_worker(
    conf_dir, serve, events_file, mlx_models_dir: Path
):
    write_conf(conf_dir, {"core": {"backend": "mlx"}})
    hello = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    server = start(
        serve,
        "asyncio",
        events_file,
        warm=(hello, {**hello, "stream": True}),
        DDX_LLM_MODELS_DIR=str(mlx_models_dir),
    )
    body = {"messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 64}
    sock = raw_post(server.port, body)
    wait_for(server.url, running=1)
    time.sleep(0.5)  # into the prefill
    assert call("GET", server.url + "/health").json()["mlx"]["busy"]
    left = time.monotonic()
    sock.close()
    while call("GET", server.url + "/health").json()["mlx"]["busy"]:
        assert time.monotonic() - left < FREED_WITHIN + 10, "the prefill went on"
        time.sleep(0.02)
    freed = time.monotonic() - left
    print(f"real prefill: the mlx worker was free {freed:.2f} s after the client left")
    assert freed < FREED_WITHIN
    started = time.monotonic()
    assert call("POST", server.url + CHAT, json=hello).status_code == 200  # served at once
    assert time.monotonic() - started < FREED_WITHIN
    assert_nothing_leaked(server)
    ends = request_ends(events_file)  # the long request cancelled, the short one served
    assert ends[("RequestDone", "cancelled")] == 1 and ends.total() == 2, ends
