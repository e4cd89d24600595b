"""The route handlers: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Both read the body as every JSON route does (415 / 400 for what is not JSON), validate it
(:mod:`.request_schema`), translate it (:mod:`.request`) and use the core's pipeline: the same
admission, model lease, backend ``prepare``, context check and lifecycle events as chat
completions.  A client that leaves while the request waits or generates stops it (nobody sees
the 499, only logs and metrics).  Every answer carries the ``request-id`` header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ddx_llm.api.chat import CLIENT_CLOSED, collect_answer, generation
from ddx_llm.api.json_body import read_json
from ddx_llm.errors import describe
from ddx_llm.events import RequestInfo
from ddx_llm.sse import EventStreamResponse, run_until_disconnect

from .counting import count_prompt_tokens
from .ended_usage import EndedUsage
from .event_stream import PING, encode
from .message_schema import TokenCount
from .request import parse, to_chat
from .request_schema import CountTokensRequest, MessagesRequest
from .shaping import MessageShaper

if TYPE_CHECKING:
    from ddx_llm.context import AppContext

NAME = "messages"
"""The plugin's name: its conf section and its key in ``app.state``."""


def ended_usage(app: AppContext) -> EndedUsage:
    return app.state(NAME, EndedUsage)


async def create_message(request: Request) -> Response:
    app: AppContext = request.app.context
    body = parse(MessagesRequest, await read_json(request))
    chat = to_chat(body)
    scope = request.scope
    try:
        model, deltas = await generation(app, scope, chat, receive=request.receive)
    except ClientDisconnect:  # it left while queued: its place is given back already
        return Response(status_code=CLIENT_CLOSED)
    request_id = RequestInfo.from_scope(scope).id
    headers = {"request-id": request_id}
    shaper = MessageShaper(
        model, request_id=request_id, ended=ended_usage(app), stop_sequences=body.stop_sequences
    )
    if body.stream:
        return EventStreamResponse(
            shaper.events(deltas),
            error_event=lambda exc: describe(exc, app, scope).body(),
            encode=encode,
            done=b"",  # Anthropic's streams end with message_stop, no [DONE]
            ping_seconds=app.settings.section(NAME).ping_seconds,
            ping=PING,
            headers=headers,
            closes=deltas,
        )
    message, disconnected = await collect_answer(
        request.receive, deltas, lambda: shaper.collect(deltas)
    )
    if disconnected:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(message.model_dump(mode="json"), headers=headers)


async def count_tokens(request: Request) -> Response:
    app: AppContext = request.app.context
    body = parse(CountTokensRequest, await read_json(request))
    chat = to_chat(body)
    scope = request.scope
    counted, gone = await run_until_disconnect(
        request.receive, lambda: count_prompt_tokens(app, scope, chat)
    )
    if gone or counted is None:
        return Response(status_code=CLIENT_CLOSED)
    headers = {"request-id": RequestInfo.from_scope(scope).id}
    return JSONResponse(TokenCount(input_tokens=counted[1]).model_dump(), headers=headers)
