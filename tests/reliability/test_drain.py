"""SIGTERM is a promise: ``/readyz`` 503 at once, new generations 503 with ``Retry-After``,
admitted requests finish up to ``[core] drain_seconds``, the rest are cut properly (an in-band
error event and ``[DONE]`` then the end of the body; 503 for those that had not answered), and
the process exits 0.

Live tests run ``ddx-llm serve`` on asyncio and trio, over HTTP/1.1 and h2c; in-process tests
check the same contract on the app (lifespan shutdown included).  Bounded: every request has a
timeout, every process is stopped.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from support import LiveServer, running_app, write_conf

from ddx_llm.factory import create_app

CHAT = "/v1/chat/completions"
DELAY_MS = 100
PROTOCOLS = pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
WORKERS = pytest.mark.parametrize("worker", ["asyncio", "trio"])


def echo(words: int, *, stream: bool = True) -> dict:
    """A mock request that takes ``words`` x 100 ms to answer."""
    text = " ".join(f"w{i}" for i in range(words))
    return {
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        "mock": {"scenario": "echo", "token_delay_ms": DELAY_MS},
    }


@dataclass
class Reader:
    """A request read in a thread: the SSE events of a stream, or a whole response."""

    url: str
    http2: bool
    body: dict
    events: list[str] = field(default_factory=list)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    error: BaseException | None = None
    first_event: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Reader:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with (
                httpx.Client(
                    base_url=self.url, http1=not self.http2, http2=self.http2, timeout=30
                ) as client,
                client.stream("POST", CHAT, json=self.body) as response,
            ):
                self.status = response.status_code
                self.headers = dict(response.headers)
                if not self.body["stream"]:
                    self.text = response.read().decode()
                    return
                # iter_lines ends only at the body's proper end: httpx raises on a chunked
                # body cut short (HTTP/1.1) or a stream reset / connection lost (HTTP/2)
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line.removeprefix("data: "))
                        self.first_event.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.first_event.set()

    def join(self, timeout: float = 30) -> Reader:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request did not end"
        return self


def words_of(events: list[str]) -> list[str]:
    chunks = [json.loads(e) for e in events if e != "[DONE]" and '"error"' not in e[:10]]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks).split()


def assert_refused_while_draining(url: str, http2: bool) -> None:
    with httpx.Client(base_url=url, http1=not http2, http2=http2, timeout=10) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"][0] == "draining: the server is shutting down"
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["draining"]["cut"] is False
        refused = client.post(CHAT, json=echo(2))
    assert refused.status_code == 503
    assert refused.json()["code"] == "model_unavailable"
    assert refused.json()["message"] == "the server is shutting down"
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.live
@WORKERS
@PROTOCOLS
def test_sigterm_mid_stream_lets_the_stream_finish_within_the_drain(serve, worker, http2):
    server = serve(worker, env={"DDX_LLM_DRAIN_SECONDS": "10"})
    reader = Reader(server.url, http2, echo(20)).start()  # about 2 s
    assert reader.first_event.wait(10)
    signalled = time.monotonic()
    server.terminate()
    time.sleep(0.3)
    assert_refused_while_draining(server.url, http2)
    reader.join()
    assert reader.error is None, reader.error
    assert reader.events[-1] == "[DONE]"
    assert words_of(reader.events) == [f"w{i}" for i in range(20)]  # complete, not cut
    assert server.wait(timeout=20) == 0
    assert time.monotonic() - signalled < 8  # the drain ended when the stream did
    assert "drained in" in server.log()


@pytest.mark.live
@WORKERS
@PROTOCOLS
def test_sigterm_cuts_what_outlasts_the_drain_with_an_error_event_and_a_proper_end(
    conf_dir: Path, serve, worker, http2
):
    write_conf(conf_dir, {"core": {"max_running": 2, "drain_seconds": 1.5}})
    server = serve(worker)
    streamed = Reader(server.url, http2, echo(100)).start()  # 10 s: outlasts the drain
    whole = Reader(server.url, http2, echo(100, stream=False)).start()  # not answered yet
    assert streamed.first_event.wait(10)
    queued = Reader(server.url, http2, echo(2, stream=False)).start()  # waits for a slot
    time.sleep(0.3)
    signalled = time.monotonic()
    server.terminate()
    time.sleep(0.3)
    assert_refused_while_draining(server.url, http2)
    for reader in (streamed, whole, queued):
        reader.join()
        assert reader.error is None, reader.error  # every response ended properly

    error = json.loads(streamed.events[-2])["error"]
    assert streamed.events[-1] == "[DONE]"
    assert (error["code"], error["message"]) == ("model_unavailable", "the server is shutting down")
    assert 5 <= len(words_of(streamed.events)) < 100  # it ran until the cut
    for cut in (whole, queued):
        assert cut.status == 503 and cut.headers["retry-after"] == "1"
        assert json.loads(cut.text)["detail"] == (
            "the drain timeout ran out before this request finished"
        )
    assert server.wait(timeout=20) == 0
    assert time.monotonic() - signalled < 1.5 + 5  # drain timeout + settling, not 10 s
    assert "drain timeout (1.5 s) reached" in server.log()


@pytest.mark.live
@WORKERS
def test_a_second_sigterm_cuts_at_once(serve, worker):
    server = serve(worker, env={"DDX_LLM_DRAIN_SECONDS": "60"})
    reader = Reader(server.url, False, echo(100)).start()
    assert reader.first_event.wait(10)
    server.terminate()
    time.sleep(0.5)
    signalled = time.monotonic()
    server.terminate()
    reader.join()
    assert reader.error is None and reader.events[-1] == "[DONE]"
    assert json.loads(reader.events[-2])["error"]["code"] == "model_unavailable"
    assert server.wait(timeout=20) == 0
    assert time.monotonic() - signalled < 5


@pytest.mark.live
@WORKERS
def test_plain_hypercorn_still_ends_a_stream_it_cancels_on_http11(conf_dir, worker):
    """``hypercorn ddx_llm:app`` drains with its own ``graceful_timeout`` (2 s here) and then
    cancels the stream: on HTTP/1.1 the stream still ends with the error event, ``[DONE]``
    and the chunked terminator.  (Over HTTP/2 Hypercorn's sending task is cancelled with it:
    no promise there — README, "Serving".)"""
    with LiveServer(conf_dir, args=("-k", worker)) as server:
        reader = Reader(server.url, False, echo(100)).start()
        assert reader.first_event.wait(10)
        server.process.terminate()
        reader.join()
        assert server.process.wait(timeout=20) == 0
    assert reader.error is None, reader.error
    assert reader.events[-1] == "[DONE]"
    error = json.loads(reader.events[-2])["error"]
    assert error["detail"] == "the stream was cut at the server's shutdown timeout"


# ----------------------------------------------------------------------------- in-process


@pytest.mark.anyio
async def test_draining_refuses_new_generations_and_says_so(conf_dir):
    async with running_app(conf_dir) as (app, client):
        host = app.context.host
        host.drain.begin(30)
        refused = await client.post(CHAT, json=echo(1))
        assert refused.status_code == 503
        assert refused.json()["detail"] == "draining: no new generations; retry on another instance"
        assert 1 <= int(refused.headers["retry-after"]) <= 31
        assert (await client.get("/readyz")).status_code == 503
        health = (await client.get("/health")).json()
        assert health["draining"]["cut"] is False and health["draining"]["seconds_left"] > 25
        assert health["requests"] == {"running": 0, "waiting": 0}
        assert (await client.get("/v1/models")).status_code == 200  # the rest still answers


@pytest.mark.anyio
async def test_the_lifespan_shutdown_cuts_a_stream_with_an_error_event_and_done(conf_dir):
    """A lifespan shutdown that comes while a stream runs (embedding code, servers that end
    the lifespan first) cuts it properly through the host's close, instead of dropping it."""
    app = create_app(conf_dir)
    events: list[str] = []
    started = anyio.Event()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                await started.wait()
                response = await client.post(CHAT, json=echo(100))  # the whole body at once
                events.extend(e.removeprefix("data: ") for e in response.text.split("\n\n") if e)

            tg.start_soon(read)
            with anyio.fail_after(20):
                async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
                    started.set()
                    while app.context.host.admission.running == 0:
                        await anyio.sleep(0.05)
                    await anyio.sleep(0.3)
                # the lifespan shutdown has run: the stream was cut, not awaited for 10 s
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "model_unavailable"
    assert 1 <= len(words_of(events)) < 100
    assert app.context.host.admission.running == 0
