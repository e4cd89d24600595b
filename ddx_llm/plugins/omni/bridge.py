"""Run an ASGI app (the upstream mlx-omni-server router) on a thread of its own, off our loop.

The upstream generates synchronously inside its request handlers: on our event loop it would
stall ``/health`` and serialize every request for a whole generation.  So it gets
:class:`UpstreamThread`, ONE persistent daemon thread running its own asyncio loop, and
everything of the upstream runs there: its import, model loads and unloads, generation.  One
thread only: with two or more such threads generating at once, MLX deadlocked or the process
died within a few dozen requests (measured; MLX streams are per thread, too).

:meth:`UpstreamThread.serve` bridges one HTTP request: the app runs on the upstream loop with a
``receive`` and ``send`` that hop to our loop (asyncio or trio; anyio only on our side) through
an anyio :class:`~anyio.from_thread.BlockingPortal`.

- Messages the app sends go into a deque, in order, and a "tick" wakes our side, which drains
  the deque into our ``send``.  Only streamed body chunks (``more_body``) make the app wait for
  our side (an ack): that is back-pressure, and it lets the upstream loop switch between
  concurrent streams after every chunk.  The response start and the final body are
  fire-and-forget, so a finished answer leaves at once instead of waiting behind another
  request's blocking generation.
- A failed ``send`` on our side (client gone) is raised into the app at its next ack, which
  stops the generation on its own thread.
- Cancelling our side cancels the upstream task (effective at its next ``await``: between
  tokens for a stream, after the whole generation for a plain answer) and waits, bounded, until
  it has really stopped, so a model lease is not released while the model still generates.

The upstream side is an asyncio loop because the upstream is asyncio code; ``asyncio`` is used
only on that thread.  Our side uses anyio only.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import math
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

logger = logging.getLogger(__name__)

Message = dict[str, Any]
ASGIApp = Callable[..., Awaitable[None]]
CANCEL_WAIT_SECONDS = 30.0
"""How long a cancelled request waits for the upstream task to stop before giving up on it."""


class UpstreamStopped(RuntimeError):
    """The upstream thread is not running (stopped at shutdown, or never started)."""


class UpstreamTask:
    """One coroutine run on the upstream loop; ``finished`` is set when it is over, whatever
    ended it (result, exception, or cancellation, even before it started)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coro_fn: Callable[[], Awaitable[Any]],
                 on_done: Callable[[], None]) -> None:  # fmt: skip
        self.loop = loop
        self.finished = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False
        self._coro_fn = coro_fn
        self._on_done = on_done
        self._task: asyncio.Task | None = None
        try:
            loop.call_soon_threadsafe(self._start)
        except RuntimeError as exc:  # the loop is closed
            raise UpstreamStopped("the omni upstream thread is not running") from exc

    def _start(self) -> None:
        self._task = self.loop.create_task(self._coro_fn())
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self.cancelled = True
        elif task.exception() is not None:
            self.error = task.exception()
        else:
            self.result = task.result()
        self.finished.set()
        self._on_done()

    def cancel(self) -> None:
        """Ask the task to stop at its next ``await`` (from any thread)."""
        with contextlib.suppress(RuntimeError):  # loop closed: the task is gone with it
            self.loop.call_soon_threadsafe(lambda: self._task and self._task.cancel())


class UpstreamThread:
    """One daemon thread running one asyncio loop until :meth:`stop`."""

    def __init__(self, name: str = "omni-upstream") -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.in_flight = 0
        """HTTP requests being served by the upstream (only touched from our loop)."""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        if not self._thread.is_alive() and self.loop is None:
            self._thread.start()
            self._ready.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                # MLX streams belong to the thread that used them; a thread that ran MLX and
                # exits without this can abort the process at interpreter exit.
                mx = sys.modules.get("mlx.core")
                if mx is not None and hasattr(mx, "clear_streams"):
                    mx.clear_streams()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread.  Blocking:
        call it through ``anyio.to_thread.run_sync``."""
        if self.loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    async def run_sync(self, func: Callable[[], Any]) -> Any:
        """Run blocking ``func`` on the upstream thread, between the steps of its requests,
        and return its result (or raise its exception) without blocking our loop."""

        async def call() -> Any:
            return func()

        self.start()
        async with BlockingPortal() as portal:
            done = anyio.Event()
            task = UpstreamTask(self.loop, call, lambda: _poke(portal, done.set))  # type: ignore[arg-type]
            try:
                await done.wait()
            except BaseException:
                task.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_WAIT_SECONDS):
                    await done.wait()
                raise
        if task.error is not None:
            raise task.error
        if task.cancelled:
            raise UpstreamStopped("the omni upstream call was cancelled")
        return task.result

    async def serve(self, app: ASGIApp, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one HTTP request with ``app`` on the upstream loop (see the module docstring).

        Raises what the app raised (after the messages it sent before), unless our ``send``
        failed first: the client is gone and nobody is left to tell.
        """
        self.start()
        outbox: collections.deque[tuple[Message, concurrent.futures.Future | None]] = (
            collections.deque()
        )
        tick_tx, tick_rx = anyio.create_memory_object_stream[None](math.inf)
        failure: list[BaseException] = []
        self.in_flight += 1
        try:
            async with BlockingPortal() as portal, tick_rx:

                def tick() -> None:
                    # A late poke may land after we stopped reading.
                    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                        tick_tx.send_nowait(None)

                ended = False

                def end() -> None:
                    # Run by the task's last poke: once it ran, no poke of this request is in
                    # flight any more, so stopping the portal cannot race one.
                    nonlocal ended
                    ended = True
                    tick()

                async def up_receive() -> Message:
                    return await asyncio.wrap_future(portal.start_task_soon(receive))

                async def up_send(message: Message) -> None:
                    if failure:
                        raise failure[0]
                    streamed = message["type"] == "http.response.body" and message.get(
                        "more_body", False
                    )
                    ack = concurrent.futures.Future() if streamed else None
                    outbox.append((message, ack))
                    _poke(portal, tick)
                    if ack is not None:
                        await asyncio.wrap_future(ack)

                task = UpstreamTask(
                    self.loop,  # type: ignore[arg-type]
                    lambda: app(scope, up_receive, up_send),
                    lambda: _poke(portal, end),
                )
                try:
                    while True:
                        while outbox:
                            message, ack = outbox.popleft()
                            await _forward(send, message, ack, failure)
                        if ended and not outbox:
                            break
                        await tick_rx.receive()
                except BaseException:
                    task.cancel()
                    _fail_acks(outbox)
                    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_WAIT_SECONDS):
                        while not ended:
                            await tick_rx.receive()
                            _fail_acks(outbox)
                    raise
                finally:
                    _fail_acks(outbox)
                    await portal.stop(cancel_remaining=True)
            if task.error is not None and not failure:
                raise task.error
        finally:
            self.in_flight -= 1


async def _forward(
    send: Any, message: Message, ack: concurrent.futures.Future | None, failure: list
) -> None:
    if failure:  # the client is gone: drop the rest, release the upstream
        _settle(ack, failure[0])
        return
    try:
        await send(message)
    except Exception as exc:  # the client left (OSError & co.): tell the upstream
        failure.append(exc)
        _settle(ack, exc)
        return
    _settle(ack)


def _settle(ack: concurrent.futures.Future | None, exc: BaseException | None = None) -> None:
    """Resolve an ack, unless the upstream stopped waiting for it (its wait was cancelled,
    which cancels the ack too)."""
    if ack is None or ack.done():
        return
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
        if exc is None:
            ack.set_result(None)
        else:
            ack.set_exception(exc)


def _fail_acks(outbox: collections.deque) -> None:
    """Never leave the upstream waiting for an ack nobody will give."""
    while outbox:
        _message, ack = outbox.popleft()
        _settle(ack, anyio.BrokenResourceError("bridge closed"))


def _poke(portal: BlockingPortal, func: Callable[[], Any]) -> None:
    """Schedule ``func`` on our loop from the upstream thread, without waiting."""
    try:
        fut = portal.start_task_soon(func)
    except RuntimeError:  # portal stopped: our side is gone, nobody to wake
        return
    # A failing poke would otherwise vanish into its future and leave a side waiting forever.
    fut.add_done_callback(_log_failure)


def _log_failure(fut: concurrent.futures.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        logger.error("omni bridge: poke failed", exc_info=fut.exception())
