"""``POST /v1/chat/completions``: validate, lease the model, generate, shape, stream.

The flow is one-way: body → :class:`ChatCompletionRequest` → :func:`generation` (the model
lease, backend ``prepare``, the context check, backend ``generate``, lifecycle events) →
:class:`CompletionShaper` → SSE or JSON.  The lease is held until the generation is closed, so a
swap waits for this request to finish.  :func:`generation` is the pipeline every API surface
shares: a surface plugin translates its request into a ``ChatCompletionRequest`` and shapes the
deltas it gets back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from .. import events
from ..backend import Delta
from ..errors import ContextTooLong, describe
from ..events import RequestInfo
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
    model, deltas = await generation(app, request.scope, chat)
    shaper = CompletionShaper(model, include_usage=chat.include_usage, logprobs=bool(chat.logprobs))
    if chat.stream:
        scope = request.scope
        return EventStreamResponse(
            shaper.stream(deltas), error_body=lambda exc: describe(exc, app, scope).body()
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
    app: AppContext, scope: Scope, chat: ChatCompletionRequest
) -> tuple[str, AsyncIterator[Delta]]:
    """Start generating ``chat`` for the request behind ``scope``: returns the registry id of
    the model that serves it and the backend's deltas, observed (first-token, token and done
    events).  The model lease is held until the deltas are closed — close them in every case.

    Raises what admission, the lease, the backend's ``prepare`` or the context check raise
    (``RequestDone`` with ``error`` is emitted for failures after the lease was taken).
    """
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
    except BaseException:
        await stack.aclose()
        app.emit(events.RequestDone(info, entry.id, "error", 0, 0, time.monotonic() - started))
        raise
    clock = events.TokenClock(app.emit, info, entry.id, started)
    return entry.id, observe(deltas, clock, app.emit, prompt.tokens, release=stack)


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
) -> AsyncIterator[Delta]:
    """Pass ``deltas`` through, timing tokens with ``clock``; then close the generation, release
    the model lease (``release``) and emit ``RequestDone``, whatever ended it."""
    finish = "cancelled"
    usage = None
    try:
        async with aclosing(deltas):
            async for delta in deltas:
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
