"""``POST /v1/responses``: read, continue a stored conversation, generate, answer, store.

The generation is the core's (:func:`ddx_llm.api.chat.generation`: admission, the model lease,
the backend, the context check, lifecycle events), so a response is served exactly as a chat
completion would be, on every backend.  Order of work: validate the body; read what it refers
to (``previous_response_id``, ``item_reference`` items) — 404 when it is not this client's;
generate; then store (``store``, default true) *before* the final event or the body goes out,
so a client that continues at once finds the response.  A client that leaves stops the
generation and nothing is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ddx_llm.api.chat import CLIENT_CLOSED, collect_answer, generation
from ddx_llm.api.json_body import read_json
from ddx_llm.backend import Delta
from ddx_llm.errors import ErrorInfo, LlmError, RequestInvalid, describe
from ddx_llm.events import CLIENT_ID
from ddx_llm.sse import EventStreamResponse

from .convert import chat_request, responses_fields
from .items import Reference, parse_input, references, resolve
from .request import ResponsesRequest, parse_request
from .shaping import base_response, new_response_id, response_error
from .store import StoredResponse, StoreUnavailable, ThreadedStore
from .stream import ResponseRun

SHARED_OWNER = "*"
"""The owner of responses made without a client identity (auth off): one shared space.  Not a
possible identity (key names are ``[A-Za-z0-9._-]``)."""


class NotFound(LlmError):
    """A stored response or item that is not there — or is another client's."""

    status = 404
    code = "not_found"


def owner_of(scope: Any) -> str:
    """The client identity the auth plugin recognised, else the shared owner."""
    return scope.get("state", {}).get(CLIENT_ID) or SHARED_OWNER


def store_of(app: Any) -> ThreadedStore:
    return app.state("responses")


async def create_response(request: Request) -> Response:
    app = request.app.context
    body = parse_request(await read_json(request))
    owner, store = owner_of(request.scope), store_of(app)
    conversation, new_items = await conversation_for(store, owner, body)
    chat = chat_request(body, conversation)
    try:
        model, deltas = await generation(app, request.scope, chat, receive=request.receive)
    except ClientDisconnect:  # it left while queued
        return Response(status_code=CLIENT_CLOSED)
    except RequestInvalid as exc:  # the backend refuses a parameter: name the client's field
        raise responses_fields(exc) from None
    response = base_response(body, new_response_id(), model)
    run = ResponseRun(response, want_logprobs=body.want_logprobs)

    async def keep() -> None:
        if body.store:
            output_ids = [item["id"] for item in run.response["output"]]
            await store.put(
                owner, StoredResponse(run.response, conversation, [*new_items, *output_ids])
            )

    scope = request.scope
    if body.stream:
        return EventStreamResponse(
            events(run, deltas, keep, lambda exc: describe(exc, app, scope)),
            error_event=lambda exc: {"error": describe(exc, app, scope).body()},
            closes=deltas,
        )
    _, gone = await collect_answer(request.receive, deltas, lambda: collect(run, deltas))
    if gone:
        return Response(status_code=CLIENT_CLOSED)
    await keep()
    return JSONResponse(run.response)


async def conversation_for(
    store: ThreadedStore, owner: str, body: ResponsesRequest
) -> tuple[list[dict[str, Any]], list[str]]:
    """The conversation this response answers (the previous response's, then ``input`` with
    references resolved) and the ids of the items ``input`` introduces."""
    earlier: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        previous = await store.get(owner, body.previous_response_id)
        if previous is None:
            raise NotFound(
                f"no stored response {body.previous_response_id!r}",
                detail=[
                    {"field": "previous_response_id", "message": "not found", "type": "not_found"}
                ],
            )
        earlier = previous.conversation()
    parsed = parse_input(body.input)
    wanted = references(parsed)
    found = await store.items(owner, wanted)
    for i, entry in enumerate(parsed):
        if isinstance(entry, Reference) and entry.id not in found:
            raise NotFound(
                f"no stored item {entry.id!r}",
                detail=[{"field": f"input.{i}.id", "message": "not found", "type": "not_found"}],
            )
    items = resolve(parsed, found)
    seen: set[str] = set()
    for item in [*earlier, *items]:
        if item["id"] in seen:
            raise RequestInvalid(
                f"duplicate item {item['id']!r} in the conversation",
                detail=[
                    {
                        "field": "input",
                        "message": f"item {item['id']} appears twice",
                        "type": "duplicate_item",
                    }
                ],
            )
        seen.add(item["id"])
    own = [
        item["id"]
        for entry, item in zip(parsed, items, strict=True)
        if not isinstance(entry, Reference)
    ]
    return [*earlier, *items], own


async def collect(run: ResponseRun, deltas: AsyncIterator[Delta]) -> dict[str, Any]:
    """The whole generation as the final Response object (exceptions propagate)."""
    async with aclosing(deltas):
        async for delta in deltas:
            run.feed(delta)
            if run.finished:
                return run.response
    raise LlmError("the backend ended the generation without a finish reason")


async def events(
    run: ResponseRun,
    deltas: AsyncIterator[Delta],
    keep: Callable[[], Awaitable[None]],
    explain: Callable[[Exception], ErrorInfo],
) -> AsyncIterator[dict[str, Any]]:
    """The event sequence of ``run`` (:mod:`.stream`).  A generation that fails mid-way ends
    with ``response.failed`` (not an HTTP error: the headers are out); the response is stored
    (``keep``) before its final event."""
    try:
        for event in run.start():
            yield event
    except BaseException:  # closed before the generation was read: close it all the same
        await deltas.aclose()
        raise
    try:
        async with aclosing(deltas):
            async for delta in deltas:
                for event in run.feed(delta):
                    yield event
                if run.finished:
                    break
        if not run.finished:
            raise LlmError("the backend ended the generation without a finish reason")
    except Exception as exc:
        info = explain(exc)
        for event in run.fail(info.code, info.message):
            yield event
    try:
        await keep()
    except StoreUnavailable as exc:
        run.response.update(status="failed", error=response_error(exc.code, exc.message))
    yield run.final_event()
