"""Watching for the client leaving while a request is answered.

After the request body, an ASGI app learns of a disconnect only by calling ``receive()``, so a
request that waits — for a generation slot, a model, its tokens — needs a second task that
listens while it does.  That task and its cancellation are the most expensive part of a short
request (about 60 µs of a cancelled anyio task group, when a whole mock answer takes 150 µs),
so both helpers here start the watcher only at the work's first wait (:class:`_Watched`): work
that runs to its end without waiting had nothing a disconnect could have interrupted.

- :func:`run_until_disconnect` runs work that does not send the response (waiting for a
  generation to start, collecting an answer) and cancels the watcher after it;
- :func:`answer_until_disconnect` runs work that sends the whole response; its watcher ends by
  itself when the server reports the end of the response (``http.disconnect``, which ASGI
  servers send once a response is complete), so nothing is cancelled when all goes well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import anyio
from starlette.types import Message, Receive, Send

T = TypeVar("T")


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has disconnected (the request body must already be read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[T]]
) -> tuple[T | None, bool]:
    """Run ``work()`` and cancel it if the client disconnects first.

    Returns ``(result, False)`` when the work finished, ``(None, True)`` when the client left.
    An exception of ``work()`` is raised as it is (not wrapped in an exception group).  The
    watcher starts at the work's first wait (none for work that never waits).
    """
    result: T | None = None
    completed = False
    watching = False
    error: Exception | None = None

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await wait_for_disconnect(receive)
            tg.cancel_scope.cancel()

        def waits() -> None:
            nonlocal watching
            if not watching:
                watching = True
                tg.start_soon(watch)

        try:
            result = await _Watched(work(), waits)
            completed = True  # a disconnect noticed after this point came after the answer
        except Exception as exc:  # raised below, outside the task group that would wrap it
            error = exc
        if watching:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return (result, False) if completed else (None, True)


AFTER_ANSWER_SECONDS = 1.0
"""After a complete response, how long the watcher waits for the server's ``http.disconnect``
before it is cancelled (a server that follows the ASGI spec sends it at once)."""


class _Answering:
    """The state one :func:`answer_until_disconnect` shares with its watcher."""

    __slots__ = ("ending", "left", "over", "watching")

    def __init__(self) -> None:
        self.ending = False  # the last body message is being sent (or was)
        self.over = False  # the answer returned or failed
        self.left = False  # the client left before the answer's end
        self.watching = False  # the watcher was started


async def answer_until_disconnect(
    receive: Receive, send: Send, answer: Callable[[Send], Awaitable[None]]
) -> bool:
    """Run ``answer(send)`` — which waits, generates and sends the whole response — and cancel
    it if the client disconnects first; returns True when the client left before the last body
    message (then nothing more reaches it).  An exception of ``answer`` is raised as it is.

    The watcher costs a task, and cancelling it costs more than the task, so:

    - it is started at the answer's first wait (:class:`_Watched`): an answer that runs to its
      end without ever suspending (a mock or a cached reply on asyncio, where a send suspends
      only when the connection pushes back) had nothing a disconnect could interrupt.  Any
      wait — a queue slot, a model, a token, a send the client does not read — starts it;
    - it ends by itself when all goes well: ASGI servers answer ``receive()`` with
      ``http.disconnect`` once the response is complete.  Only an answer that fails, or a
      server that says nothing within :data:`AFTER_ANSWER_SECONDS`, cancels it.
    """
    state = _Answering()

    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state.ending = True  # a disconnect from now on is the response's normal end
            try:
                await send(message)
            except OSError:
                # the client is gone and the server says so on a send (uvicorn, the test
                # client) before the watcher heard it: the same as its http.disconnect
                if not state.over:
                    state.left = True
                tg.cancel_scope.cancel()
                await anyio.lowlevel.checkpoint()  # raises the cancellation (unless shielded)

        async def watch() -> None:
            await wait_for_disconnect(receive)
            if not (state.over or state.ending):
                state.left = True
                tg.cancel_scope.cancel()

        def waits() -> None:
            if not state.watching:
                state.watching = True
                tg.start_soon(watch)

        try:
            await _Watched(answer(tracked_send), waits)
        except Exception as exc:  # raised below, outside the task group that would wrap it
            error = exc
        state.over = True
        if state.watching:
            if state.ending and error is None:
                tg.cancel_scope.deadline = anyio.current_time() + AFTER_ANSWER_SECONDS
            else:
                tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return state.left


class _Watched:
    """Awaits a coroutine, calling ``waits()`` whenever it suspends — before the event loop
    sees what it suspends on (an asyncio future, a trio trap) — and forwarding what the loop
    sends or throws back (a cancellation included).  It enters no cancel scope, so the
    coroutine's own scopes are untouched; ``waits()`` may start a task in an enclosing task
    group."""

    __slots__ = ("_coroutine", "_waits")

    def __init__(self, coroutine: Awaitable[Any], waits: Callable[[], None]) -> None:
        self._coroutine = coroutine
        self._waits = waits

    def __await__(self) -> Generator[Any, Any, Any]:
        step = self._coroutine.__await__()
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                value = step.send(sent) if thrown is None else step.throw(thrown)
            except StopIteration as done:
                return done.value
            self._waits()
            try:
                sent, thrown = (yield value), None
            except GeneratorExit:
                step.close()
                raise
            except BaseException as exc:
                sent, thrown = None, exc
