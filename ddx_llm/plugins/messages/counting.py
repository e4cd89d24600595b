"""Counting a request's prompt tokens the way the model will see them, without generating.

The core's pipeline (:func:`ddx_llm.api.chat.generation`) always goes on to generate, and has
no "prepare only" step; so :func:`count_prompt_tokens` runs its first half with the public
pieces it is made of: the model host's lease (admission, a load in progress, the model the
request names) and the backend's ``prepare``, which renders the prompt with the model's own
chat template and tokenizer (mlx) or estimates it (mock: the estimate is its count).  Nothing is
generated; the lease is released at once.

Lifecycle events stay whole: the lease emits ``RequestQueued`` / ``RequestStarted`` (or
``RequestRejected``), and this module the request's one ``RequestDone`` — finish reason
``stop`` (``error`` / ``cancelled`` when ``prepare`` failed or the client left), with 0 prompt
and 0 completion tokens, because the model processed none (token budgets and metrics must not
count a count as a generation).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
from starlette.types import Scope

from ddx_llm.events import RequestDone, RequestInfo
from ddx_llm.schemas import ChatCompletionRequest

if TYPE_CHECKING:
    from ddx_llm.context import AppContext


async def count_prompt_tokens(
    app: AppContext, scope: Scope, chat: ChatCompletionRequest
) -> tuple[str, int]:
    """``(model id, prompt tokens)`` of ``chat`` for the request behind ``scope``.

    Raises what the lease raises (``ModelNotFound``, ``ModelUnavailable``, ``Overloaded``) and
    what the backend's ``prepare`` raises (``RequestInvalid`` naming a field it cannot serve).
    """
    info = RequestInfo.from_scope(scope)
    requested = app.host.resolve(chat.model) if chat.model else None
    started = time.monotonic()
    model: str | None = None
    finish = "error"
    try:
        async with app.host.lease(requested, info) as lease:
            model = lease.entry.id
            try:
                prompt = await app.backend.prepare(lease.handle, lease.entry, chat)
            except anyio.get_cancelled_exc_class():
                finish = "cancelled"
                raise
            finish = "stop"
    finally:
        if model is not None:  # the lease was granted: this request reached the model
            app.emit(RequestDone(info, model, finish, 0, 0, time.monotonic() - started))
    return model, prompt.tokens
