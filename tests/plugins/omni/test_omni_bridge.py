"""The omni bridge (:mod:`ddx_llm.plugins.omni.bridge`) with a small plain ASGI app as the
upstream, on asyncio and trio: messages in order, back-pressure (a streamed chunk waits for our
side, the response start and the final body do not), our side leaving early or being cancelled
stops the upstream and waits until it has, the upstream's exception reaches our side, blocking
calls run on the upstream thread, and a stopped thread is reported.

The upstream apps block in ``time.sleep`` between chunks, as mlx-omni-server generates
synchronously between its sends."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from ddx_llm.plugins.omni.bridge import UpstreamStopped, UpstreamThread, wait_for

pytestmark = pytest.mark.anyio

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class StreamingApp:
    """Streams ``chunks`` body pieces ``b"0;"``, ``b"1;"``..., each after ``step`` seconds of
    blocking work; raises at chunk ``fail_at``.  Records what happened to it."""

    def __init__(self, chunks: int = 3, step: float = 0.0, fail_at: int | None = None) -> None:
        self.chunks, self.step, self.fail_at = chunks, step, fail_at
        self.body: bytes | None = None
        self.produced = 0
        self.outcome: str | None = None
        self.thread_name: str | None = None
        self.finished = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        self.thread_name = threading.current_thread().name
        try:
            self.body = (await receive())["body"]
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for index in range(self.chunks):
                time.sleep(self.step)  # noqa: ASYNC251 - generating blocks, as upstream
                if index == self.fail_at:
                    raise RuntimeError(f"failed at chunk {index}")
                self.produced += 1
                await send(
                    {"type": "http.response.body", "body": b"%d;" % index, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.outcome = "complete"
        except BaseException as exc:
            self.outcome = type(exc).__name__
            raise
        finally:
            self.finished.set()


@pytest.fixture
def upstream():
    thread = UpstreamThread("omni-test-upstream")
    yield thread
    thread.stop()
    assert not thread.alive


def bodies(messages: list[dict]) -> list[bytes]:
    return [m.get("body", b"") for m in messages if m["type"] == "http.response.body"]


async def test_messages_arrive_in_order_and_the_exchange_ends(upstream):
    app = StreamingApp(chunks=5)
    received = []
    async with upstream.exchange(app, SCOPE, b'{"q": 1}') as exchange:
        assert upstream.in_flight == 1
        while (message := await exchange.receive()) is not None:
            received.append(message)
    assert received[0] == {"type": "http.response.start", "status": 200, "headers": []}
    assert bodies(received) == [b"0;", b"1;", b"2;", b"3;", b"4;", b""]
    assert received[-1]["more_body"] is False
    assert (app.body, app.outcome, app.thread_name) == (b'{"q": 1}', "complete", upstream.name)
    assert upstream.in_flight == 0


async def test_a_streamed_chunk_waits_until_our_side_asks_for_the_next(upstream):
    app = StreamingApp(chunks=4)
    async with upstream.exchange(app, SCOPE, b"") as exchange:
        assert (await exchange.receive())["type"] == "http.response.start"
        for index in range(4):
            message = await exchange.receive()
            assert message["body"] == b"%d;" % index
            await anyio.sleep(0.05)  # time enough to run ahead, were it not waiting
            assert app.produced == index + 1
        assert (await exchange.receive())["more_body"] is False
        assert await exchange.receive() is None


async def test_the_response_start_and_the_final_body_do_not_wait(upstream):
    app = StreamingApp(chunks=0)  # a plain answer: start, then the whole (empty) body
    async with upstream.exchange(app, SCOPE, b"") as exchange:
        with anyio.fail_after(5):
            await wait_for(app.finished)  # returned before our side read anything
        assert [m["type"] for m in [await exchange.receive(), await exchange.receive()]] == [
            "http.response.start", "http.response.body",
        ]  # fmt: skip
        assert await exchange.receive() is None
    assert app.outcome == "complete"


async def test_leaving_early_stops_the_upstream_and_waits_for_it(upstream):
    app = StreamingApp(chunks=1000, step=0.01)
    async with upstream.exchange(app, SCOPE, b"") as exchange:
        for _ in range(3):  # the start and two chunks
            await exchange.receive()
    assert app.finished.is_set()  # leaving waited until the app had stopped
    assert app.outcome in ("CancelledError", "BridgeClosed") and app.produced <= 3
    assert upstream.in_flight == 0


async def test_cancelling_our_side_waits_until_the_upstream_has_stopped(upstream):
    """Cancelled while the app is inside a 0.5 s blocking step: the exchange cannot stop it
    before that step ends, and does not return before it has."""
    app = StreamingApp(chunks=3, step=0.5)
    started = time.monotonic()
    with anyio.move_on_after(0.2) as scope:
        async with upstream.exchange(app, SCOPE, b"") as exchange:
            while await exchange.receive() is not None:
                pass
    assert scope.cancelled_caught
    assert app.finished.is_set() and time.monotonic() - started >= 0.45
    assert app.produced == 1 and app.outcome in ("CancelledError", "BridgeClosed")
    assert upstream.in_flight == 0


async def test_what_the_upstream_raises_reaches_our_side_after_its_messages(upstream):
    app = StreamingApp(chunks=5, fail_at=2)
    received = []
    async with upstream.exchange(app, SCOPE, b"") as exchange:
        with pytest.raises(RuntimeError, match="failed at chunk 2"):
            while (message := await exchange.receive()) is not None:
                received.append(message)
    assert bodies(received) == [b"0;", b"1;"]
    assert upstream.in_flight == 0


async def test_two_exchanges_interleave_chunk_by_chunk(upstream):
    apps = [StreamingApp(chunks=4, step=0.02), StreamingApp(chunks=4, step=0.02)]
    order: list[tuple[int, bytes]] = []

    async def read(index: int) -> None:
        async with upstream.exchange(apps[index], SCOPE, b"") as exchange:
            while (message := await exchange.receive()) is not None:
                if message.get("body"):
                    order.append((index, message["body"]))

    async with anyio.create_task_group() as group:
        group.start_soon(read, 0)
        group.start_soon(read, 1)
    firsts = [order.index((i, b"0;")) for i in (0, 1)]
    lasts = [order.index((i, b"3;")) for i in (0, 1)]
    assert max(firsts) < min(lasts), order  # neither ran to its end before the other began


async def test_run_sync_runs_on_the_upstream_thread(upstream):
    assert await upstream.run_sync(lambda: threading.current_thread().name) == upstream.name

    def fail() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await upstream.run_sync(fail)


async def test_a_stopped_upstream_thread_is_reported(upstream):
    await upstream.run_sync(lambda: None)
    await anyio.to_thread.run_sync(upstream.stop)
    assert not upstream.alive
    with pytest.raises(UpstreamStopped):
        await upstream.run_sync(lambda: None)
    with pytest.raises(UpstreamStopped):
        async with upstream.exchange(StreamingApp(), SCOPE, b""):
            pass
    assert upstream.in_flight == 0
