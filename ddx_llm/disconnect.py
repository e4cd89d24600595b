"""Watching for the client leaving while a request is answered.

After the request body, an ASGI app learns of a disconnect only by calling ``receive()``, so a
request that waits — for a generation slot, a model, its tokens — needs a second task that
listens while it does.  Starting that task, and the task group it would need, are the most
expensive part of a short request, so:

- the watcher starts only at the work's first wait (:class:`_Watched`): work that runs to its
  end without waiting had nothing a disconnect could have interrupted;
- it starts in the app's :class:`Watchers` — one task group for the whole app, entered by its
  lifespan — so the request holds one cancel scope, not a task group (whose exit costs a turn
  of the event loop even when no task was started).  Without a running :class:`Watchers` (an
  app used without its lifespan, a helper called outside a request), a task group of the
  request's own serves instead.

- :func:`run_until_disconnect` runs work that does not send the response (waiting for a
  generation to start, collecting an answer) and stops the watcher after it;
- :func:`answer_until_disconnect` runs work that sends the whole response; its watcher ends by
  itself when the server reports the end of the response (``http.disconnect``, which ASGI
  servers send once a response is complete), so nothing is cancelled when all goes well.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup
from starlette.types import Message, Receive, Send

T = TypeVar("T")

logger = logging.getLogger(__name__)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has disconnected (the request body must already be read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class Watchers:
    """The task group an app's disconnect watchers run in, for as long as its lifespan runs
    (:meth:`run`).  :class:`~ddx_llm.factory.DdxApp` makes it the request's own
    (:data:`WATCHERS`), so the helpers below find it without being handed it.

    A watcher here is not a child of the request it watches: the helpers stop it in every case
    (the request ending, failing or being cancelled) and it never raises."""

    def __init__(self) -> None:
        self._tasks: TaskGroup | None = None
        self._thread: int | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED):
        """Run the task group until cancelled (``await task_group.start(watchers.run)``);
        watchers still running then are cancelled with it."""
        async with anyio.create_task_group() as tasks:
            self._tasks, self._thread = tasks, threading.get_ident()
            try:
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tasks = self._thread = None

    def group(self) -> TaskGroup | None:
        """The task group, when it runs on this thread's event loop (an app's lifespan and its
        requests share one; a test that ran the lifespan in another thread falls back)."""
        if self._tasks is not None and self._thread == threading.get_ident():
            return self._tasks
        return None


WATCHERS: ContextVar[Watchers | None] = ContextVar("ddx_llm_watchers", default=None)
"""The :class:`Watchers` of the app serving the current request (set per request by the app)."""


class _Watcher:
    """One request's watcher: listens on ``receive`` until the client leaves, then calls
    ``gone()``.  Its cancel scope is made here, in the request's task, so that the request can
    stop the watcher (:meth:`stop`, :meth:`expire`) before it started, or after."""

    __slots__ = ("_gone", "_receive", "_scope")

    def __init__(self, receive: Receive, gone: Callable[[], None]) -> None:
        self._receive = receive
        self._gone = gone
        self._scope = anyio.CancelScope()

    async def run(self) -> None:
        with self._scope:
            try:
                await wait_for_disconnect(self._receive)
            except Exception:  # a server whose receive fails once the client left
                logger.debug("receive failed while watching for a disconnect", exc_info=True)
            self._gone()

    def stop(self) -> None:
        self._scope.cancel()

    def expire(self, seconds: float) -> None:
        """Let it wait ``seconds`` more for the server's ``http.disconnect``, then stop."""
        self._scope.deadline = anyio.current_time() + seconds


async def run_until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[T]]
) -> tuple[T | None, bool]:
    """Run ``work()`` and cancel it if the client disconnects first.

    Returns ``(result, False)`` when the work finished, ``(None, True)`` when the client left.
    An exception of ``work()`` is raised as it is (not wrapped in an exception group).  The
    watcher starts at the work's first wait (none for work that never waits).
    """

    async def run(tasks: TaskGroup) -> tuple[T | None, bool]:
        result: T | None = None
        completed = False
        with anyio.CancelScope() as scope:
            watcher = _Watcher(receive, scope.cancel)
            watching = False

            def waits() -> None:
                nonlocal watching
                if not watching:
                    watching = True
                    tasks.start_soon(watcher.run)

            try:
                result = await _Watched(work(), waits)
                completed = True  # a disconnect noticed after this point came after the answer
            finally:
                if watching:
                    watcher.stop()
        return (result, False) if completed else (None, True)

    return await _with_watchers(run)


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

    - The watcher is started at the answer's first wait (:class:`_Watched`): an answer that
      runs to its end without ever suspending (a mock or a cached reply on asyncio, where a
      send suspends only when the connection pushes back) had nothing a disconnect could
      interrupt.  Any wait — a queue slot, a model, a token, a send the client does not
      read — starts it, but for a wait in the last body message: a disconnect then is the
      response's end, and the server ends that send itself when the client leaves
      (Hypercorn's HTTP/2 waits there for every response to be written: a watcher per
      request for nothing);
    - it ends by itself when all goes well: ASGI servers answer ``receive()`` with
      ``http.disconnect`` once the response is complete.  Only an answer that fails, or a
      server that says nothing within :data:`AFTER_ANSWER_SECONDS`, stops it.
    """

    async def run(tasks: TaskGroup) -> bool:
        state = _Answering()
        with anyio.CancelScope() as scope:

            def gone() -> None:
                if not (state.over or state.ending):
                    state.left = True
                    scope.cancel()

            watcher = _Watcher(receive, gone)

            async def tracked_send(message: Message) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    state.ending = True  # a disconnect from now on is the response's normal end
                try:
                    await send(message)
                except OSError:
                    # the client is gone and the server says so on a send (uvicorn, the test
                    # client) before the watcher heard it: the same as its http.disconnect
                    if not state.over:
                        state.left = True
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()  # raises the cancellation (if unshielded)

            def waits() -> None:
                if not (state.watching or state.ending):
                    state.watching = True
                    tasks.start_soon(watcher.run)

            failed = True
            try:
                await _Watched(answer(tracked_send), waits)
                failed = False
            finally:
                state.over = True
                if state.watching:
                    if state.ending and not failed:
                        watcher.expire(AFTER_ANSWER_SECONDS)
                    else:
                        watcher.stop()
        return state.left

    return await _with_watchers(run)


async def _with_watchers(run: Callable[[TaskGroup], Awaitable[T]]) -> T:
    """``run(tasks)``, ``tasks`` being the task group to start the watcher in: the app's
    (:data:`WATCHERS`), else one of this call's own, which then waits for its watcher to end
    (stopped, or expired).  An exception of ``run`` is raised as it is, not wrapped in the
    exception group of the task group."""
    watchers = WATCHERS.get()
    tasks = watchers.group() if watchers is not None else None
    if tasks is not None:
        return await run(tasks)
    error: Exception | None = None
    async with anyio.create_task_group() as own:
        try:
            result = await run(own)
        except Exception as exc:  # raised below, outside the task group that would wrap it
            error = exc
    if error is not None:
        raise error
    return result


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
