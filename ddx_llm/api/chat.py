"""``POST /v1/chat/completions``: validate, lease the model, generate, shape, stream.

The flow is one-way: body → :class:`ChatCompletionRequest` → :func:`generation` (the model
lease, backend ``prepare``, the context check, backend ``generate``, lifecycle events) →
:class:`CompletionShaper` → SSE or JSON.  The lease is held until the generation is closed, so a
swap waits for this request to finish.  :func:`generation` is the pipeline every API surface
shares: a surface plugin translates its request into a ``ChatCompletionRequest`` and shapes the
deltas it gets back.  Given the request's ``receive``, it notices a client that leaves while the
request waits (its place in the queue is given back at once); the drain at shutdown may cut the
deltas it returns (see :mod:`ddx_llm.host.drain`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, TypeVar

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .. import events
from ..backend import Delta
from ..disconnect import answer_until_disconnect, run_until_disconnect
from ..errors import ContextTooLong, describe
from ..events import RequestInfo
from ..host import Drain, Lease
from ..host.drain import CutWatch
from ..registry import ModelEntry
from ..schemas import ChatCompletionRequest
from ..sse import EventStreamResponse
from .json_body import read_model
from .shaping import CompletionShaper

if TYPE_CHECKING:
    from ..context import AppContext

CLIENT_CLOSED = 499  # nginx's convention for "client closed request"; only metrics see it


async def chat_completions(request: Request) -> ChatAnswer:
    app: AppContext = request.app.context
    chat = await read_model(request, ChatCompletionRequest)
    return ChatAnswer(app, chat)


class ChatAnswer:
    """The answer to one validated chat request, as an ASGI response: the lease, the
    generation and the response — JSON or SSE — all under one watch for the client leaving
    (:func:`~ddx_llm.sse.answer_until_disconnect`: one watcher task for the whole request).

    An error before anything was sent (a refusal, ``context_too_long``) is raised for the
    core's error layer to answer; a client that left before the response started gets
    :data:`CLIENT_CLOSED` (only metrics see it)."""

    def __init__(self, app: AppContext, chat: ChatCompletionRequest) -> None:
        self.app = app
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app, chat = self.app, self.chat
        if chat.stream:
            stream = EventStreamResponse(
                None, error_event=lambda exc: {"error": describe(exc, app, scope).body()}
            )

            async def respond(send: Send) -> None:
                watch = app.host.drain.watch()
                model, deltas = await _start(app, scope, chat, watch)
                shaper = CompletionShaper(
                    model, include_usage=chat.include_usage, logprobs=bool(chat.logprobs)
                )
                stream.source = shaper.stream(deltas, encoded=shaper.chunk_prefix())
                stream.closes = deltas  # the source may never start: it closes what it wraps
                await stream.stream(send, watch)

            gone = await stream.answer(receive, send, respond)
            started = stream.started
        else:
            sent: list[bool] = []

            async def respond(send: Send) -> None:
                watch = app.host.drain.watch()
                model, deltas = await _start(app, scope, chat, watch)
                shaper = CompletionShaper(model, logprobs=bool(chat.logprobs))
                try:
                    with watch:
                        completion = await shaper.collect(deltas)
                finally:
                    await deltas.aclose()
                body = completion.model_dump_json().encode()
                sent.append(True)
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", str(len(body)).encode()), JSON_TYPE]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})

            gone = await answer_until_disconnect(receive, send, respond)
            started = bool(sent)
        if gone and not started:  # it left while queued or generating: nothing was answered
            await Response(status_code=CLIENT_CLOSED)(scope, receive, send)


JSON_TYPE = (b"content-type", b"application/json")


async def generation(
    app: AppContext, scope: Scope, chat: ChatCompletionRequest, *, receive: Receive | None = None
) -> tuple[str, AsyncIterator[Delta]]:
    """Start generating ``chat`` for the request behind ``scope``: returns the registry id of
    the model that serves it and the backend's deltas, observed (first-token, token and done
    events; their ``prompt_tokens`` is the prompt's size, known before the first delta).  The
    model lease is held until the deltas are closed — close them in every case.

    With ``receive`` (the request's, its body already read), a client that leaves while the
    request waits — for a generation slot, a model load, the backend's ``prepare`` — is noticed
    at once: its place is given back and :class:`~starlette.requests.ClientDisconnect` raised.
    Once generating, the drain at shutdown may cut the deltas: they then raise
    ``ModelUnavailable`` (the stream's in-band error).

    Raises what admission, the lease, the backend's ``prepare`` or the context check raise
    (``RequestDone`` with ``error``, or ``cancelled``, is emitted for failures after the lease
    was taken).
    """
    if receive is None:
        return await _start(app, scope, chat)
    started, gone = await run_until_disconnect(receive, lambda: _start(app, scope, chat))
    if gone or started is None:
        raise ClientDisconnect()
    return started


async def _start(
    app: AppContext, scope: Scope, chat: ChatCompletionRequest, watch: CutWatch | None = None
) -> tuple[str, AsyncIterator[Delta]]:
    info = RequestInfo.from_scope(scope)
    # no model named: the lease takes the model resident once any load in progress is over
    requested = app.host.resolve(chat.model) if chat.model else None
    started = time.monotonic()
    lease = await app.host.acquire(requested, info)
    entry = lease.entry
    try:
        prompt = await app.backend.prepare(lease.handle, entry, chat)
        check_context(entry, prompt.tokens, chat.completion_limit)
        deltas = app.backend.generate(lease.handle, entry, prompt, chat)
    except BaseException as exc:
        lease.release()
        finish = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "error"
        app.emit(events.RequestDone(info, entry.id, finish, 0, 0, time.monotonic() - started))
        raise
    each = app.observers.takes(events.TokensGenerated)
    clock = events.TokenClock(app.emit, info, entry.id, started, each=each)
    early: list[bool] = []
    observed = observe(
        deltas, clock, app.emit, prompt.tokens, lease=lease, drain=app.host.drain, watch=watch,
        early=early,
    )  # fmt: skip
    return entry.id, Observed(observed, early, prompt.tokens)


T = TypeVar("T")


async def collect_answer(
    receive: Receive, deltas: AsyncIterator[Delta], gather: Callable[[], Awaitable[T]]
) -> tuple[T | None, bool]:
    """Run ``gather()`` — a surface's shaper collecting ``deltas`` into one answer — unless
    the client leaves first (:func:`~ddx_llm.disconnect.run_until_disconnect`); the deltas are
    closed in every case.  Returns ``(answer, False)``, or ``(None, True)`` when the client
    left (answer :data:`CLIENT_CLOSED`)."""
    try:
        return await run_until_disconnect(receive, gather)
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]


def check_context(entry: ModelEntry, prompt_tokens: int, completion_limit: int | None) -> None:
    """Raise ContextTooLong when prompt plus requested completion exceed the context window."""
    needed = prompt_tokens + (completion_limit or 1)
    if needed > entry.context_window:
        raise ContextTooLong(
            f"{prompt_tokens} prompt tokens + {completion_limit or 1} completion tokens exceed "
            f"the context window of {entry.id} ({entry.context_window} tokens)",
            detail={
                "prompt_tokens": prompt_tokens,
                "max_tokens": completion_limit,
                "context_window": entry.context_window,
            },
        )


async def observe(
    deltas: AsyncIterator[Delta],
    clock: events.TokenClock,
    emit: events.Emit,
    prompt_tokens: int,
    *,
    lease: Lease,
    drain: Drain,
    watch: CutWatch | None = None,
    early: list[bool] | None = None,
) -> AsyncGenerator[Delta, None]:
    """Pass ``deltas`` through, timing tokens with ``clock``; then close the generation, release
    the model ``lease`` and emit ``RequestDone``, whatever ended it.  A cut of the ``drain``
    interrupts the wait for the next delta and raises its ``ModelUnavailable`` — through a
    cancel scope around each wait, or, given the consumer's ``watch`` (its one scope around the
    whole loop: :class:`~ddx_llm.host.drain.CutWatch`), by marking the waits for it.  A
    non-empty ``early`` when it starts (:class:`Observed`: closed before its first delta) ends
    it at once, through the same cleanup."""
    finish = "cancelled"
    usage = None
    try:
        async with aclosing(deltas):
            while not early:
                if watch is None:
                    with drain.cuttable():
                        delta = await anext(deltas, None)
                else:  # the consumer's one scope; marked, as the drain cancels only waits
                    watch.check()
                    watch.waiting = True
                    try:
                        delta = await anext(deltas, None)
                    finally:
                        watch.waiting = False
                if delta is None:
                    break
                if delta.tokens:
                    clock.tokens(delta.tokens)
                if delta.finish_reason:
                    finish, usage = delta.finish_reason, delta.usage
                yield delta
    except Exception:
        finish = "error"
        raise
    finally:
        lease.release()  # synchronous: nothing to shield from cancellation
        if watch is not None and watch.cut:
            finish = "error"  # cut by the drain while it waited: not the client's doing
        if usage:
            emit(clock.done(finish, usage.prompt_tokens, usage.completion_tokens))
        else:
            emit(clock.done(finish, prompt_tokens))


class Observed:
    """The deltas of :func:`observe`, whose ``aclose()`` also cleans up when not one delta was
    asked for.  An async generator closed before it started never runs its body — its
    ``finally`` included — and this one holds the lease from before it starts (a consumer that
    fails at its first send closes it so).  ``__anext__`` hands the generator's own awaitable
    on: nothing is added per delta but a flag."""

    __slots__ = ("_early", "_generator", "_started", "prompt_tokens")

    def __init__(
        self, generator: AsyncGenerator[Delta, None], early: list[bool], prompt_tokens: int
    ) -> None:
        self._generator = generator
        self._early = early
        self._started = False
        self.prompt_tokens = prompt_tokens
        """The prompt's size as the backend's ``prepare`` counted it, known before any delta
        (a surface that reports it up front: Anthropic's ``message_start``)."""

    def __aiter__(self) -> Observed:
        return self

    def __anext__(self) -> Awaitable[Delta]:
        self._started = True
        return self._generator.__anext__()

    async def aclose(self) -> None:
        """Close the generation, release the lease and emit ``RequestDone``, once."""
        if not self._started:  # run the body, told to end at once: its cleanup runs
            self._started = True
            self._early.append(True)
            await anext(self._generator, None)
        await self._generator.aclose()
