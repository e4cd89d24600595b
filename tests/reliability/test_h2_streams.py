"""Many thousands of HTTP/2 streams over ONE h2c connection, every one answered in full.

Hypercorn (0.18) counts the requests of a connection and, past ``keep_alive_max_requests``
(its default: 1,000), calls h2's ``close_connection()`` for an HTTP/2 connection.  That GOAWAY
puts h2's state machine in CLOSED, where no frame can be sent any more: the streams it had
already accepted get no headers, no data and no reset (a client waits until the connection
drops).  ``conf/hypercorn.toml`` and ``ddx-llm serve`` set the limit above what one connection
can carry (2**30 client streams), so it is never reached.

The client here is the ``h2`` library on one raw socket, so that "one connection" is certain
(an HTTP client library would silently reconnect): it keeps as many streams in flight as the
server allows (``SETTINGS_MAX_CONCURRENT_STREAMS``, 100), checks every response to its last
byte, and fails on any GOAWAY, RST_STREAM or stream left unanswered.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from hypercorn.config import Config
from support import ROOT, LiveServer, write_conf

from ddx_llm.cli import H2_STREAM_IDS, apply_serving_defaults

STREAMS = 6000
"""Streams per connection in the main test: six times Hypercorn's default limit."""
CHAT = b"/v1/chat/completions"
STREAMED = json.dumps(
    {
        "messages": [{"role": "user", "content": "one two three"}],
        "stream": True,
        "mock": {"scenario": "echo"},
    }
).encode()
COMPLETE = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


@dataclass
class Stream:
    kind: str
    status: int | None = None
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None


@dataclass
class Outcome:
    streams: dict[int, Stream]
    goaway: list[tuple[int, int]]
    ping_answered: bool


KINDS = ("stream", "chat", "health", "models")


def request_of(kind: str) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """Headers and body of a request of ``kind``: streamed chat, chat, /health, /v1/models."""
    base = [(b":scheme", b"http"), (b":authority", b"127.0.0.1")]
    if kind in ("stream", "chat"):
        body = STREAMED if kind == "stream" else COMPLETE
        headers = [
            (b":method", b"POST"),
            (b":path", CHAT),
            *base,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        return headers, body
    path = b"/health" if kind == "health" else b"/v1/models"
    return [(b":method", b"GET"), (b":path", path), *base], None


async def many_streams(port: int, total: int, kinds: tuple[str, ...] = KINDS) -> Outcome:
    """Send ``total`` requests (``kinds`` in turn) over one h2c connection, as many at once as
    the server allows; returns what each stream got.  Bounded: at most 100 s in all."""
    socket = await anyio.connect_tcp("127.0.0.1", port)
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    connection.initiate_connection()
    streams: dict[int, Stream] = {}
    goaway: list[tuple[int, int]] = []
    lock = anyio.Lock()
    limit_known = anyio.Event()
    finished = anyio.Event()
    pinged = anyio.Event()
    answered = 0
    in_flight = 0
    settled_one = anyio.Event()

    async def flush() -> None:
        async with lock:
            data = connection.data_to_send()
            if data:
                await socket.send(data)

    def settled() -> None:
        nonlocal answered, in_flight, settled_one
        answered += 1
        in_flight -= 1
        settled_one.set()
        if answered == total:
            finished.set()

    def closed() -> None:
        finished.set()
        settled_one.set()

    async def read() -> None:
        while True:
            try:
                data = await socket.receive(65536)
                events = connection.receive_data(data)
            except (anyio.EndOfStream, anyio.BrokenResourceError, h2.exceptions.ProtocolError):
                closed()  # the server closed the connection (h2 refuses frames after GOAWAY)
                return
            for event in events:
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    limit_known.set()
                elif isinstance(event, h2.events.ResponseReceived):
                    streams[event.stream_id].status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id].body += event.data
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    streams[event.stream_id].ended = True
                    settled()
                elif isinstance(event, h2.events.StreamReset):
                    streams[event.stream_id].reset = event.error_code
                    settled()
                elif isinstance(event, h2.events.ConnectionTerminated):
                    goaway.append((event.last_stream_id, event.error_code))
                    closed()
                elif isinstance(event, h2.events.PingAckReceived):
                    pinged.set()
            await flush()

    with anyio.fail_after(100):
        async with socket, anyio.create_task_group() as tg:
            await flush()
            tg.start_soon(read)
            await limit_known.wait()  # the server's SETTINGS: how many streams at once
            limit = connection.remote_settings.max_concurrent_streams
            for index in range(total):
                while in_flight >= limit and not finished.is_set():
                    settled_one = anyio.Event()
                    await settled_one.wait()
                if finished.is_set():  # the connection ended early
                    break
                kind = kinds[index % len(kinds)]
                headers, body = request_of(kind)
                stream_id = connection.get_next_available_stream_id()
                streams[stream_id] = Stream(kind)
                in_flight += 1
                connection.send_headers(stream_id, headers, end_stream=body is None)
                if body is not None:
                    connection.send_data(stream_id, body, end_stream=True)
                await flush()
            with anyio.move_on_after(30):
                await finished.wait()
            if not goaway:  # the connection must still be usable after all of them
                connection.ping(b"stillok!")
                await flush()
                with anyio.move_on_after(5):
                    await pinged.wait()
            tg.cancel_scope.cancel()
    return Outcome(streams, goaway, pinged.is_set())


def incomplete(outcome: Outcome) -> list[str]:
    """Every stream that did not get a complete, valid 200 answer, described."""
    problems = []
    for stream_id, stream in outcome.streams.items():
        problem = None
        if stream.reset is not None:
            problem = f"reset ({stream.reset})"
        elif stream.status is None:
            problem = "no headers"
        elif stream.status != 200:
            problem = f"status {stream.status}: {bytes(stream.body[:200])!r}"
        elif not stream.ended:
            problem = "no END_STREAM"
        elif stream.kind == "stream":
            text = stream.body.decode()
            events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
            if events[-1] != "[DONE]" or not text.endswith("\n\n"):
                problem = f"stream without [DONE]: {text[-80:]!r}"
            else:
                chunks = [json.loads(e) for e in events[:-1]]
                words = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
                problem = None if words == "one two three" else f"content {words!r}"
        else:
            document = json.loads(stream.body)
            expected = {"chat": "choices", "health": "status", "models": "data"}[stream.kind]
            problem = None if expected in document else f"body {bytes(stream.body[:200])!r}"
        if problem:
            problems.append(f"stream {stream_id} ({stream.kind}): {problem}")
    return problems


@pytest.mark.live
@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_thousands_of_streams_on_one_h2c_connection_all_complete(conf_dir, serve, worker):
    # a generous queue: every stream in flight (100 at most) is admitted, none refused
    write_conf(conf_dir, {"core": {"max_running": 32, "max_waiting": 128}})
    server = serve(worker)
    outcome = anyio.run(many_streams, server.port, STREAMS, backend=worker)
    assert outcome.goaway == [], outcome.goaway
    assert len(outcome.streams) == STREAMS
    problems = incomplete(outcome)
    assert problems == [], f"{len(problems)} of {STREAMS} streams incomplete: {problems[:5]}"
    assert outcome.ping_answered  # and the connection is still open and usable
    assert "Traceback" not in server.log()


@pytest.mark.live
def test_plain_hypercorn_with_the_project_config_keeps_streams_past_1000(conf_dir):
    """``hypercorn --config conf/hypercorn.toml ddx_llm:app``: the file's setting alone."""
    config = ROOT / "conf" / "hypercorn.toml"
    with LiveServer(conf_dir, args=("--config", str(config), "-k", "asyncio")) as server:
        outcome = anyio.run(many_streams, server.port, 2500, ("health",))  # quick
    assert outcome.goaway == [] and len(outcome.streams) == 2500
    assert incomplete(outcome) == []
    assert outcome.ping_answered


def test_the_project_config_sets_a_limit_no_h2_connection_reaches():
    settings = tomllib.loads((ROOT / "conf" / "hypercorn.toml").read_text())
    assert settings["keep_alive_max_requests"] >= H2_STREAM_IDS == 2**30


def test_serve_applies_the_safe_limit_when_the_file_sets_none(tmp_path: Path, capsys):
    absent = tmp_path / "absent.toml"
    config = Config()
    apply_serving_defaults(config, absent)
    assert config.keep_alive_max_requests == H2_STREAM_IDS

    silent = tmp_path / "silent.toml"
    silent.write_text('bind = ["127.0.0.1:4250"]\n')
    config = Config.from_toml(silent)
    apply_serving_defaults(config, silent)
    assert config.keep_alive_max_requests == H2_STREAM_IDS
    assert capsys.readouterr().err == ""


def test_serve_keeps_a_lower_limit_that_the_file_sets_but_warns(tmp_path: Path, capsys):
    chosen = tmp_path / "chosen.toml"
    chosen.write_text("keep_alive_max_requests = 500\n")
    config = Config.from_toml(chosen)
    apply_serving_defaults(config, chosen)
    assert config.keep_alive_max_requests == 500
    warning = capsys.readouterr().err
    assert "keep_alive_max_requests = 500" in warning and "HTTP/2 streams" in warning
