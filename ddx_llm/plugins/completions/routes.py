"""The route handler: ``POST /v1/completions``.

It reads the body as every JSON route does (415 / 400 for what is not JSON), validates it
(:mod:`.request`), translates it into the core's chat request and generates it with
:func:`ddx_llm.api.chat.generation` — the admission, model lease, backend ``prepare``, context
check and lifecycle events of chat completions — then shapes the deltas (:mod:`.shaping`).  A
client that leaves while the request waits or generates stops it (only logs and metrics see
the 499).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ddx_llm.api.chat import CLIENT_CLOSED, collect_answer, generation
from ddx_llm.api.json_body import parse_as, read_json
from ddx_llm.errors import describe
from ddx_llm.sse import EventStreamResponse

from .request import CompletionRequest, prompt_text, to_chat
from .shaping import CompletionShaper

if TYPE_CHECKING:
    from ddx_llm.context import AppContext

NAME = "completions"
"""The plugin's name: its conf section and its key in ``app.state``."""


async def create_completion(request: Request) -> Response:
    app: AppContext = request.app.context
    body = parse_as(CompletionRequest, await read_json(request))
    raw = app.state(NAME) == "raw"  # the prompt mode, chosen at start-up
    chat = to_chat(body, raw=raw)
    scope = request.scope
    try:
        model, deltas = await generation(app, scope, chat, receive=request.receive)
    except ClientDisconnect:  # it left while queued: its place is given back already
        return Response(status_code=CLIENT_CLOSED)
    shaper = CompletionShaper(
        model,
        prompt=prompt_text(body),
        echo=bool(body.echo),
        logprobs=body.logprobs is not None,
        include_usage=body.include_usage,
    )
    if body.stream:
        return EventStreamResponse(
            shaper.stream(deltas),
            error_event=lambda exc: {"error": describe(exc, app, scope).body()},
            closes=deltas,
        )
    completion, disconnected = await collect_answer(
        request.receive, deltas, lambda: shaper.collect(deltas)
    )
    if disconnected:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(completion.model_dump(mode="json"))
