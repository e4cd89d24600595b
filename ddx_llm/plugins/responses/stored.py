"""``GET`` / ``DELETE /v1/responses/{response_id}`` and ``GET …/{response_id}/input_items``.

Each reads only the calling client's responses (:func:`~.create.owner_of`): another client's
id answers 404 exactly as an unknown one does, so ids reveal nothing.  ``input_items`` lists the
whole conversation the response answered — the previous responses' items included, as OpenAI
does — newest first unless ``order=asc``, ``limit`` (1-100, default 20) at a time, continuing
``after`` an item id.  Query parameters that ask for what cannot be given are refused naming
them: ``stream=true`` (there is no background response to replay), ``starting_after``, and
``include`` values other than ``message.output_text.logprobs`` (a stored response holds the log
probabilities its request asked for).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from .create import NotFound, owner_of, store_of
from .request import LOGPROBS, refuse
from .store import StoredResponse


async def retrieve_response(request: Request) -> JSONResponse:
    _check_query(request)
    return JSONResponse((await _stored(request)).response)


async def delete_response(request: Request) -> JSONResponse:
    response_id = request.path_params["response_id"]
    if not await store_of(request.app.context).delete(owner_of(request.scope), response_id):
        raise _not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(request: Request) -> JSONResponse:
    _check_query(request)
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise refuse("order", "asc or desc")
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise refuse("limit", "an integer from 1 to 100")
    items = (await _stored(request)).input_items
    if order == "desc":
        items = items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise refuse("after", f"no item {after!r} among this response's input items")
        items = items[ids.index(after) + 1 :]
    page = items[: int(limit_text)]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page),
        }
    )


async def _stored(request: Request) -> StoredResponse:
    response_id = request.path_params["response_id"]
    record = await store_of(request.app.context).get(owner_of(request.scope), response_id)
    if record is None:
        raise _not_found(response_id)
    return record


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"no stored response {response_id!r}")


def _check_query(request: Request) -> None:
    """Refuse the query parameters of OpenAI's routes that ask for what cannot be given
    (others, such as the auth plugin's ``api_key``, are not this route's business)."""
    query = request.query_params
    if query.get("stream", "false").lower() not in ("false", "0"):
        raise refuse("stream", "a stored response is read whole: there is nothing to replay")
    if "starting_after" in query:
        raise refuse("starting_after", "there is no stream to resume")
    for value in [*query.getlist("include"), *query.getlist("include[]")]:
        if value != LOGPROBS:
            raise refuse("include", f"{value!r} cannot be included; only {LOGPROBS!r}")
