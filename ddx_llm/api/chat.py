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
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope

from .. import events
from ..backend import Delta
from ..errors import ContextTooLong, describe
from ..events import RequestInfo
from ..host import Drain
from ..registry import ModelEntry
from ..schemas import ChatCompletionRequest
from ..sse import EventStreamResponse, run_until_disconnect
from .json_body import read_model
from .shaping import CompletionShaper

if TYPE_CHECKING:
    from ..context import AppContext

CLIENT_CLOSED = 499  # nginx's convention for "client closed request"; only metrics see it


async def chat_completions(request: Request) -> Response:
    app: AppContext = request.app.context
    chat = await read_model(request, ChatCompletionRequest)
    try:
        model, deltas = await generation(app, request.scope, chat, receive=request.receive)
    except ClientDisconnect:  # it left while queued: its place is given back already
        return Response(status_code=CLIENT_CLOSED)
    shaper = CompletionShaper(model, include_usage=chat.include_usage, logprobs=bool(chat.logprobs))
    if chat.stream:
        scope = request.scope
        return EventStreamResponse(
            shaper.stream(deltas),
            error_event=lambda exc: {"error": describe(exc, app, scope).body()},
        )
    try:
        completion, disconnected = await run_until_disconnect(
            request.receive, lambda: shaper.collect(deltas)
        )
    finally:
        await deltas.aclose()
    if disconnected:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(completion.model_dump(mode="json"))


async def generation(
    app: AppContext, scope: Scope, chat: ChatCompletionRequest, *, receive: Receive | None = None
) -> tuple[str, AsyncIterator[Delta]]:
    """Start generating ``chat`` for the request behind ``scope``: returns the registry id of
    the model that serves it and the backend's deltas, observed (first-token, token and done
    events).  The model lease is held until the deltas are closed — close them in every case.

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
    app: AppContext, scope: Scope, chat: ChatCompletionRequest
) -> tuple[str, AsyncIterator[Delta]]:
    info = RequestInfo.from_scope(scope)
    # no model named: the lease takes the model resident once any load in progress is over
    requested = app.host.resolve(chat.model) if chat.model else None
    started = time.monotonic()
    stack = AsyncExitStack()
    lease = await stack.enter_async_context(app.host.lease(requested, info))
    entry = lease.entry
    try:
        prompt = await app.backend.prepare(lease.handle, entry, chat)
        check_context(entry, prompt.tokens, chat.completion_limit)
        deltas = app.backend.generate(lease.handle, entry, prompt, chat)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await stack.aclose()
        finish = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "error"
        app.emit(events.RequestDone(info, entry.id, finish, 0, 0, time.monotonic() - started))
        raise
    clock = events.TokenClock(app.emit, info, entry.id, started)
    observed = observe(deltas, clock, app.emit, prompt.tokens, release=stack, drain=app.host.drain)
    return entry.id, observed


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
    release: AsyncExitStack,
    drain: Drain,
) -> AsyncIterator[Delta]:
    """Pass ``deltas`` through, timing tokens with ``clock``; then close the generation, release
    the model lease (``release``) and emit ``RequestDone``, whatever ended it.  A cut of the
    ``drain`` interrupts the wait for the next delta and raises its ``ModelUnavailable``."""
    finish = "cancelled"
    usage = None
    try:
        async with aclosing(deltas):
            while True:
                with drain.cuttable():
                    delta = await anext(deltas, None)
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
        with anyio.CancelScope(shield=True):
            await release.aclose()
        if usage:
            emit(clock.done(finish, usage.prompt_tokens, usage.completion_tokens))
        else:
            emit(clock.done(finish, prompt_tokens))
