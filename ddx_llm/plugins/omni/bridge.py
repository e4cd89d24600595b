"""Run an ASGI app (the upstream mlx-omni-server router) on a thread of its own, off our loop.

The upstream generates synchronously inside its request handlers: on our event loop it would
stall ``/health`` and serialize every request for a whole generation.  So it gets
:class:`UpstreamThread`, ONE persistent daemon thread running its own asyncio loop, and
everything of the upstream runs there: its import, model loads and unloads, prompt counting,
generation.  One thread only: with two or more such threads generating at once, MLX deadlocked
or the process died within a few dozen requests (measured; MLX streams are per thread, too).

:meth:`UpstreamThread.run_sync` runs a blocking function there, between the steps of its
requests.  :meth:`UpstreamThread.exchange` serves one HTTP request with the app there, and our
side *pulls* the app's response messages (:meth:`Exchange.receive`), not a ``send`` callback:
the reader is the backend's ``generate`` async generator, and a callback would need a task
beside it across its yields (a task group spanning a ``yield``: unsupported by anyio and
trio).  Our side waits for the upstream in a waiter thread (``anyio.to_thread``), as the mlx
backend waits for its worker.  An :class:`Exchange`

- gives the app its request body, then nothing (a later ``receive`` waits until the end);
- keeps the app's messages in order.  Only streamed body chunks (``more_body``) make the app
  wait: each is acknowledged when our side asks for the next message, once it has passed the
  chunk on (back-pressure; the upstream loop switches between concurrent streams after every
  chunk).  The response start and the final body are fire-and-forget;
- when our side leaves it (``async with`` exit) before the app returned, cancels the app's task
  (effective at its next ``await``: after the token being generated), fails its later sends as
  a client's disconnect does (ASGI 2.4: ``OSError``), and waits, shielded and bounded, until it
  has stopped, so a model lease is not released while the model still generates.

``asyncio`` is used on the upstream thread only (the upstream is asyncio code); our side uses
anyio only.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

logger = logging.getLogger(__name__)

Message = dict[str, Any]
ASGIApp = Callable[..., Awaitable[None]]
Ack = concurrent.futures.Future
CANCEL_WAIT_SECONDS = 30.0  # how long a cancelled request waits for the upstream task to stop


class UpstreamStopped(RuntimeError):
    """The upstream thread is not running (stopped at shutdown, or never started)."""


class BridgeClosed(OSError):
    """Raised into the app when it sends after our side left: a client's disconnect."""


class UpstreamTask:
    """One coroutine run on the upstream loop; ``finished`` is set when it is over, whatever
    ended it (result, exception, or cancellation, even before it started), then ``on_done()``
    is called, if given (on the upstream thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coro_fn: Callable[[], Awaitable[Any]],
                 on_done: Callable[[], None] | None = None) -> None:  # fmt: skip
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
        if self._on_done is not None:
            self._on_done()

    def cancel(self) -> None:
        """Ask the task to stop at its next ``await`` (from any thread)."""
        with contextlib.suppress(RuntimeError):  # loop closed: the task is gone with it
            self.loop.call_soon_threadsafe(lambda: self._task and self._task.cancel())


class UpstreamThread:
    """One daemon thread running one asyncio loop until :meth:`stop`."""

    def __init__(self, name: str = "omni-upstream") -> None:
        self.name = name
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
        task = UpstreamTask(self.loop, call)  # type: ignore[arg-type]
        try:
            await wait_for(task.finished)
        except BaseException:
            await stop(task)
            raise
        if task.error is not None:
            raise task.error
        if task.cancelled:
            raise UpstreamStopped("the omni upstream call was cancelled")
        return task.result

    def exchange(self, app: ASGIApp, scope: dict[str, Any], body: bytes) -> Exchange:
        """One HTTP request (``scope`` and its whole ``body``) for ``app`` on the upstream
        loop, started when entered: ``async with thread.exchange(...) as exchange``."""
        self.start()
        return Exchange(self, app, scope, body)


class Exchange:
    """One HTTP request served by the upstream app, read by our side (module docstring)."""

    def __init__(self, thread: UpstreamThread, app: ASGIApp, scope: dict[str, Any],
                 body: bytes) -> None:  # fmt: skip
        self._thread = thread
        self._app = app
        self._scope = scope
        self._request: Message | None = {"type": "http.request", "body": body, "more_body": False}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._outbox: collections.deque[tuple[Message, Ack | None]] = collections.deque()
        self._unacked: Ack | None = None
        self._closed = False
        self.task: UpstreamTask | None = None

    async def __aenter__(self) -> Exchange:
        self.task = UpstreamTask(
            self._thread.loop,  # type: ignore[arg-type]
            lambda: self._app(self._scope, self._up_receive, self._up_send),
            self._notify,
        )
        self._thread.in_flight += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.aclose()
        finally:
            self._thread.in_flight -= 1

    async def _up_receive(self) -> Message:
        if self._request is not None:
            message, self._request = self._request, None
            return message
        # The body was all: wait until our side ends the request by cancelling this task.
        return await asyncio.get_running_loop().create_future()

    async def _up_send(self, message: Message) -> None:
        streamed = message["type"] == "http.response.body" and message.get("more_body", False)
        ack: Ack | None = concurrent.futures.Future() if streamed else None
        with self._lock:
            if self._closed:
                raise BridgeClosed("the request was closed on our side")
            self._outbox.append((message, ack))
            self._wake.set()
        if ack is not None:
            await asyncio.wrap_future(ack)

    def _notify(self) -> None:
        with self._lock:  # with the lock: a receive() between its checks must see it
            self._wake.set()

    async def receive(self) -> Message | None:
        """The app's next message, in order (asking acknowledges the one before); None once
        the app has returned.  Raises what the app raised (after the messages it sent before),
        or :class:`UpstreamStopped` when the upstream loop stopped it (shutdown)."""
        task = self.task
        assert task is not None, "enter the exchange first (async with)"
        _settle(self._unacked)
        self._unacked = None
        while True:
            with self._lock:
                if self._outbox:
                    message, self._unacked = self._outbox.popleft()
                    return message
                if task.finished.is_set():
                    break
                self._wake.clear()
            await wait_for(self._wake)
        if task.error is not None:
            raise task.error
        if task.cancelled:
            raise UpstreamStopped("the omni upstream stopped the request (shutdown)")
        return None

    async def aclose(self) -> None:
        """End the request: release the app's pending sends and, unless it has returned,
        cancel it and wait (shielded, bounded) until it has stopped."""
        with self._lock:
            self._closed = True
            acks = [ack for _message, ack in self._outbox]
            self._outbox.clear()
            self._wake.set()  # frees a waiter thread left behind by a cancelled receive()
        for ack in [*acks, self._unacked]:
            _settle(ack, BridgeClosed("the request was closed on our side"))
        self._unacked = None
        if self.task is not None and not self.task.finished.is_set():
            await stop(self.task)


async def wait_for(event: threading.Event) -> None:
    """Wait until ``event`` is set, in a waiter thread of our own (not the shared pool);
    cancelling abandons the thread, which ends once ``event`` is set."""
    await anyio.to_thread.run_sync(
        event.wait, abandon_on_cancel=True, limiter=anyio.CapacityLimiter(1)
    )


async def stop(task: UpstreamTask) -> None:
    """Cancel ``task`` and wait, shielded and bounded, until it has stopped."""
    task.cancel()
    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_WAIT_SECONDS) as waited:
        await wait_for(task.finished)
    if waited.cancelled_caught:
        logger.error("omni bridge: an upstream task did not stop in %.0f s", CANCEL_WAIT_SECONDS)


def _settle(ack: Ack | None, exc: BaseException | None = None) -> None:
    """Resolve an ack, unless the upstream stopped waiting for it (a cancelled wait cancels
    the ack too)."""
    if ack is None or ack.done():
        return
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
        if exc is None:
            ack.set_result(None)
        else:
            ack.set_exception(exc)
