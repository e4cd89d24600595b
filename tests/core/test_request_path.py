"""The lean request path: one disconnect watcher per request that ends on its own (started in
the app's watcher task group, or in one of the request's own without it), admission
without a checkpoint when a slot is free, drain cuts without a cancel scope for ready pieces,
and chunks written as JSON bytes equal to the models' own."""

from __future__ import annotations

import json

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddx_llm import events
from ddx_llm.api.chat import Observed, observe
from ddx_llm.api.shaping import CompletionShaper
from ddx_llm.backend import Delta, Usage
from ddx_llm.disconnect import AFTER_ANSWER_SECONDS, WATCHERS, Watchers, run_until_disconnect
from ddx_llm.errors import ModelUnavailable, Overloaded
from ddx_llm.host import Admission, Drain, Lease
from ddx_llm.schemas import ChatCompletionChunk
from ddx_llm.sse import answer_until_disconnect

pytestmark = pytest.mark.anyio


class Client:
    """The ASGI side of one request: ``receive`` answers ``http.disconnect`` once the response
    is complete (as servers do) or once ``leave`` is set."""

    def __init__(self, *, spec: bool = True) -> None:
        self.sent: list[dict] = []
        self.leave = anyio.Event()
        self.spec = spec

    async def receive(self) -> dict:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        if self.spec and message["type"] == "http.response.body" and not message.get("more_body"):
            self.leave.set()


@pytest.fixture(params=["app watchers", "own task group"])
async def watchers(request):
    """Each disconnect test runs with the app's watchers (as requests do) and without them."""
    if request.param == "own task group":
        yield None
        return
    found = Watchers()
    async with anyio.create_task_group() as tasks:
        await tasks.start(found.run)
        token = WATCHERS.set(found)
        try:
            yield found
        finally:
            WATCHERS.reset(token)
            tasks.cancel_scope.cancel()


async def answer_ok(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def answer_after_a_wait(send) -> None:
    await anyio.sleep(0.01)  # a real wait: the watcher starts
    await answer_ok(send)


async def test_an_answer_that_never_waits_needs_no_watcher(watchers):
    client = Client(spec=False)  # it would never say disconnect: nobody asks
    with anyio.fail_after(0.5):
        started = anyio.current_time()
        assert await answer_until_disconnect(client.receive, client.send, answer_ok) is False
    assert anyio.current_time() - started < 0.2
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]


async def test_a_complete_answer_ends_its_watcher_without_cancelling_it(watchers):
    client = Client()
    with anyio.fail_after(0.5):  # far below the 1 s allowed to a server that says nothing
        gone = await answer_until_disconnect(client.receive, client.send, answer_after_a_wait)
    assert gone is False
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]


async def test_a_server_that_never_says_disconnect_costs_at_most_the_grace(watchers):
    """The watcher waits at most the grace for the server's word; in the app's task group it
    waits there, and the request itself ends at once."""
    client = Client(spec=False)
    with anyio.fail_after(2):
        started = anyio.current_time()
        gone = await answer_until_disconnect(client.receive, client.send, answer_after_a_wait)
    took = anyio.current_time() - started
    assert gone is False
    assert took < 0.5 if watchers is not None else 0.9 < took < 1.5


async def test_an_answer_resumed_after_its_first_wait_keeps_its_own_scopes(watchers):
    """The first step enters scopes (a timeout, a sleep's) and suspends inside them; it goes
    on inside them once the watcher is started."""
    client = Client()

    async def scoped(send) -> None:
        with anyio.move_on_after(5):
            await anyio.sleep(0.01)
            with anyio.CancelScope():
                await anyio.sleep(0.01)
        await answer_ok(send)

    with anyio.fail_after(1):
        assert await answer_until_disconnect(client.receive, client.send, scoped) is False
    assert len(client.sent) == 2


async def test_a_client_that_leaves_mid_answer_cancels_it(watchers):
    client = Client()
    reached = []

    async def slow(send) -> None:
        client.leave.set()
        await anyio.sleep(5)
        reached.append("end")

    with anyio.fail_after(1):
        assert await answer_until_disconnect(client.receive, client.send, slow) is True
    assert reached == [] and client.sent == []


async def test_a_send_the_client_never_reads_is_cancelled_when_it_leaves(watchers):
    """A send that blocks (a full socket, an HTTP/2 window) is a wait like any other."""
    client = Client()
    blocked = anyio.Event()

    async def stuck_send(message: dict) -> None:
        blocked.set()
        await anyio.sleep(30)  # the peer never reads

    async def leave_once_blocked() -> None:
        await blocked.wait()
        client.leave.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(leave_once_blocked)
        with anyio.fail_after(2):
            assert await answer_until_disconnect(client.receive, stuck_send, answer_ok) is True


async def test_an_answer_that_fails_raises_its_own_error_and_stops_the_watcher(watchers):
    client = Client()

    async def failing(send) -> None:
        raise Overloaded("busy")

    with anyio.fail_after(1), pytest.raises(Overloaded):
        await answer_until_disconnect(client.receive, client.send, failing)


async def test_a_send_that_fails_because_the_client_left_is_a_disconnect(watchers):
    """Servers that raise on a send after the client left (uvicorn, the test client) tell of
    it before the watcher hears ``http.disconnect``: the same as a disconnect, not an error."""
    client = Client()
    tried: list[str] = []

    async def gone(message: dict) -> None:
        tried.append(message["type"])
        if message["type"] == "http.response.body":
            raise OSError("the client disconnected")

    async def two_events(send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await anyio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b", "more_body": True})

    with anyio.fail_after(1):
        assert await answer_until_disconnect(client.receive, gone, two_events) is True
    assert tried == ["http.response.start", "http.response.body"]


async def test_deltas_closed_before_their_first_read_still_release_and_report():
    """An async generator closed before it started never runs its ``finally``: the lease
    taken before it would be kept (a swap would wait for it forever)."""
    released: list[bool] = []
    seen: list[events.Event] = []
    info = events.RequestInfo("r1", None, "POST", "/v1/chat/completions", None)
    closed: list[bool] = []

    async def backend():
        try:
            yield Delta(content="never", tokens=1)
        finally:
            closed.append(True)

    def make() -> Observed:
        early: list[bool] = []
        lease = Lease(None, None, lambda: released.append(True))
        clock = events.TokenClock(seen.append, info, "m", 0.0)
        generator = observe(
            backend(), clock, seen.append, 3, lease=lease, drain=Drain(), early=early
        )
        return Observed(generator, early, 3)

    await make().aclose()
    assert released == [True]
    assert [(type(e).__name__, e.finish_reason) for e in seen] == [("RequestDone", "cancelled")]
    read = make()
    assert (await anext(read)).content == "never"
    await read.aclose()
    assert released == [True, True] and closed == [True]


async def test_a_free_slot_is_taken_without_waiting_and_queues_are_fifo():
    admission = Admission(max_running=1, max_waiting=4, max_queue_seconds=5)
    first = admission.try_acquire()
    assert first is not None and admission.running == 1
    order: list[int] = []

    async def queued(index: int) -> None:
        token = await admission.acquire()
        order.append(index)
        admission.release(token)

    async with anyio.create_task_group() as tg:
        for index in range(3):
            tg.start_soon(queued, index)
            await anyio.wait_all_tasks_blocked()
        assert admission.waiting == 3 and admission.try_acquire() is None
        admission.release(first)
    assert order == [0, 1, 2]
    assert (admission.running, admission.waiting) == (0, 0)


async def test_a_waiter_that_leaves_the_queue_gives_its_place_back():
    admission = Admission(max_running=1, max_waiting=4, max_queue_seconds=5)
    first = admission.try_acquire()
    got: list[str] = []

    async def waiter(name: str) -> None:
        token = await admission.acquire()
        got.append(name)
        admission.release(token)

    async with anyio.create_task_group() as tg:
        leaving = anyio.CancelScope()

        async def leaver() -> None:
            with leaving:
                await waiter("leaver")

        tg.start_soon(leaver)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "next")
        await anyio.wait_all_tasks_blocked()
        assert admission.waiting == 2
        leaving.cancel()
        await anyio.wait_all_tasks_blocked()
        assert admission.waiting == 1
        admission.release(first)
    assert got == ["next"]
    assert (admission.running, admission.waiting) == (0, 0)


async def test_a_full_queue_is_refused_at_once():
    admission = Admission(max_running=1, max_waiting=0, max_queue_seconds=5)
    assert admission.try_acquire() is not None
    with pytest.raises(Overloaded):
        await admission.acquire()


async def test_the_drain_cuts_a_wait_for_the_next_piece():
    drain = Drain()
    send, receive = anyio.create_memory_object_stream[int](10)
    async with anyio.create_task_group() as tg:

        async def cut_soon() -> None:
            await anyio.wait_all_tasks_blocked()
            assert len(drain._scopes) == 1  # the wait is cuttable
            drain.cut()

        tg.start_soon(cut_soon)
        with anyio.fail_after(1), pytest.raises(ModelUnavailable):
            with drain.cuttable():
                await receive.receive()
    assert not drain._scopes
    with pytest.raises(ModelUnavailable), drain.cuttable():  # cut already: refused at once
        pass
    send.close()
    receive.close()


async def test_a_watch_cuts_a_waiting_generation_with_one_scope():
    drain = Drain()
    send, receive = anyio.create_memory_object_stream[int](10)
    watch = drain.watch()
    async with anyio.create_task_group() as tg:

        async def cut_soon() -> None:
            await anyio.wait_all_tasks_blocked()
            assert not drain._scopes and len(drain._watches) == 1
            drain.cut()

        tg.start_soon(cut_soon)
        with anyio.fail_after(1), pytest.raises(ModelUnavailable), watch:
            watch.check()
            watch.waiting = True
            await receive.receive()
    assert watch.cut and not drain._watches
    send.close()
    receive.close()


async def test_a_watch_never_interrupts_a_send_but_stops_the_next_wait():
    drain = Drain()
    watch = drain.watch()
    with anyio.fail_after(1), pytest.raises(ModelUnavailable), watch:
        drain.cut()  # while the consumer "sends": nothing is cancelled...
        await anyio.sleep(0.01)  # ...so this goes on
        sent = True
        watch.check()  # ...and the next wait is refused
    assert sent and watch.cut


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(TEXT, min_size=1, max_size=5), model=TEXT, usage=st.booleans())
def test_chunks_written_as_bytes_equal_the_models_json(pieces, model, usage):
    deltas = [Delta(content=text, tokens=1) for text in pieces]
    deltas.append(Delta(finish_reason="length", usage=Usage(3, len(pieces))))

    async def both():
        async def source():
            for delta in deltas:
                yield delta

        shaper = CompletionShaper(model or "m", include_usage=usage)
        fast = [c async for c in shaper.stream(source(), encoded=shaper.chunk_prefix())]
        plain = [c async for c in shaper.stream(source())]
        return fast, plain

    fast, plain = anyio.run(both)
    assert [c if isinstance(c, bytes) else c.model_dump_json().encode() for c in fast] == [
        c.model_dump_json().encode() for c in plain
    ]
    assert sum(isinstance(c, bytes) for c in fast) == len(pieces) + 1  # the usage: a model
    for chunk in fast:
        if isinstance(chunk, bytes):
            ChatCompletionChunk.model_validate(json.loads(chunk))


async def test_work_that_waits_is_cancelled_when_the_client_leaves(watchers):
    client = Client()

    async def waits_then_leaves() -> str:
        client.leave.set()
        await anyio.sleep(5)
        return "never"

    with anyio.fail_after(1):
        assert await run_until_disconnect(client.receive, waits_then_leaves) == (None, True)
    with anyio.fail_after(1):  # work that waits and ends first: its result, the watcher gone
        assert await run_until_disconnect(Client().receive, answer_after_a_wait_value) == (
            "done",
            False,
        )


async def answer_after_a_wait_value() -> str:
    await anyio.sleep(0.01)
    return "done"


async def test_the_app_watchers_keep_no_task_after_the_request(watchers):
    """A watcher in the app's task group is not the request's child: it must be stopped when
    the request ends — answered, failed or left — or it would listen for ever."""
    if watchers is None:
        pytest.skip("a task group of the request's own ends with it")
    before = len(anyio.get_running_tasks())

    async def failing(send) -> None:
        await anyio.sleep(0.01)
        raise Overloaded("busy")

    with anyio.fail_after(2):
        await run_until_disconnect(Client().receive, answer_after_a_wait_value)
        with pytest.raises(Overloaded):
            await answer_until_disconnect(Client().receive, Client().send, failing)
        quiet = Client(spec=False)  # never says disconnect: its watcher expires after the grace
        await answer_until_disconnect(quiet.receive, quiet.send, answer_after_a_wait)
        await anyio.sleep(AFTER_ANSWER_SECONDS + 0.1)
    assert len(anyio.get_running_tasks()) == before


async def test_a_wait_in_the_last_send_starts_no_watcher(watchers):
    """HTTP/2 servers wait in the last send until the response is written: no watcher then."""
    client = Client(spec=False)  # a watcher would wait for ever: none may start
    before = len(anyio.get_running_tasks())
    seen: list[int] = []

    async def slow_last_send(message: dict) -> None:
        if message["type"] == "http.response.body":
            seen.append(len(anyio.get_running_tasks()))
            await anyio.sleep(0.01)  # the server writes the response out
        await client.send(message)

    with anyio.fail_after(0.5):
        assert await answer_until_disconnect(client.receive, slow_last_send, answer_ok) is False
    await anyio.sleep(0.02)
    assert seen == [before] and len(anyio.get_running_tasks()) == before
