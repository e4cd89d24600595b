"""``POST /v1/chat/completions``: validate, lease the model, generate, shape, stream.

The flow is one-way: body → :class:`ChatCompletionRequest` → :class:`ModelHost` lease → backend
``prepare`` (token count, parameter checks) → context check → backend ``generate`` → observation
events → :class:`CompletionShaper` → SSE or JSON.  The lease is held until the generation is
closed, so a swap waits for this request to finish.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import events
from .backend import Delta
from .body import read_model
from .completion import CompletionShaper
from .errors import ContextTooLong, describe
from .registry import ModelEntry
from .schemas import ChatCompletionRequest
from .sse import EventStreamResponse, run_until_disconnect

if TYPE_CHECKING:
    from .app import AppContext

CLIENT_CLOSED = 499  # nginx's convention for "client closed request"; only metrics see it


async def chat_completions(request: Request) -> Response:
    ctx: AppContext = request.app.context
    chat = await read_model(request, ChatCompletionRequest)
    # no model named: the lease takes the model resident once any load in progress is over
    requested = ctx.host.resolve(chat.model) if chat.model else None
    started = time.monotonic()
    stack = AsyncExitStack()
    lease = await stack.enter_async_context(ctx.host.lease(requested))
    entry = lease.entry
    try:
        prompt = await ctx.backend.prepare(lease.handle, entry, chat)
        check_context(entry, prompt.tokens, chat.completion_limit)
        deltas = ctx.backend.generate(lease.handle, entry, prompt, chat)
    except BaseException:
        await stack.aclose()
        done = events.RequestDone(entry.id, "error", 0, 0, time.monotonic() - started)
        events.emit(ctx.hook, done)
        raise
    observed = observe(deltas, ctx.hook, entry.id, started, prompt.tokens, release=stack)
    shaper = CompletionShaper(
        entry.id, include_usage=chat.include_usage, logprobs=bool(chat.logprobs)
    )
    if chat.stream:
        scope = request.scope
        return EventStreamResponse(
            shaper.stream(observed), error_body=lambda exc: describe(exc, ctx.hook, scope).body()
        )
    try:
        completion, disconnected = await run_until_disconnect(
            request.receive, lambda: shaper.collect(observed)
        )
    finally:
        await observed.aclose()
    if disconnected:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(completion.model_dump(mode="json"))


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
    hook: Any,
    model: str,
    started: float,
    prompt_tokens: int,
    *,
    release: AsyncExitStack,
) -> AsyncIterator[Delta]:
    """Pass ``deltas`` through, emitting first-token, token and done events; then close the
    generation and release the model lease (``release``), whatever ended it."""
    clock = events.TokenClock(hook, model, started)
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
            done = clock.done(finish, usage.prompt_tokens, usage.completion_tokens)
        else:
            done = clock.done(finish, prompt_tokens)
        events.emit(hook, done)
