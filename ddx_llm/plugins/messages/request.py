"""An Anthropic Messages request → the core's :class:`~ddx_llm.schemas.ChatCompletionRequest`.

:func:`parse` validates a body into a :mod:`.request_schema` model (400 ``field: reason`` on the
first bad field, every one in ``detail``); :func:`to_chat` translates it, refusing what no
backend here can honour yet, with the reason: a final ``assistant`` message (prefill), after
which the chat template would open a new turn.

The translation: ``system`` becomes a system message; each Anthropic message becomes one chat
message, except that a user turn's ``tool_result`` blocks become ``tool`` messages (before the
turn's text, where Anthropic requires them); an assistant turn's ``tool_use`` blocks become its
``tool_calls`` and its ``thinking`` its ``reasoning_content``.  Consecutive turns of one role
are combined into one, as Anthropic does.  Text blocks stay separate parts of a message.
``tool_choice`` maps to chat's: ``auto`` and ``none`` as they are, ``any`` to ``required``,
``tool`` to the named function, ``disable_parallel_tool_use`` to ``parallel_tool_calls: false``;
a forced call is the backend's to honour or to refuse naming ``tool_choice``, as in chat
completions (the mock honours it, a backend without constrained decoding refuses it).
``stop_sequences`` are not passed on: the surface matches them itself (:mod:`.stops`) to report
which one ended the answer.  ``metadata.user_id`` becomes chat's ``user``.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ddx_llm.errors import RequestInvalid, validation_detail
from ddx_llm.schemas import ChatCompletionRequest

from .request_schema import (
    Conversation,
    MessageParam,
    MessagesRequest,
    TextBlockParam,
    ToolChoiceParam,
)

M = TypeVar("M", bound=BaseModel)

NO_PREFILL = (
    "a final assistant turn (prefill) is not supported: the chat template would start a new "
    "turn after it; end with a user turn"
)


def refused(field: str, reason: str) -> RequestInvalid:
    """The 400 for a field this surface cannot honour."""
    return RequestInvalid(
        f"{field}: {reason}", detail=[{"field": field, "message": reason, "type": "unsupported"}]
    )


def parse(model: type[M], data: Any) -> M:
    """Validate ``data`` into ``model``; RequestInvalid names the most specific bad field first
    (of the alternatives of a union, the one that got furthest into the value)."""
    if not isinstance(data, dict):
        raise RequestInvalid("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        detail = [
            {"field": field_path(data, err["loc"]), "message": err["msg"], "type": err["type"]}
            for err in errors
        ]
        first = max(detail, key=lambda item: item["field"].count("."))
        reason = first["message"].removeprefix("Value error, ")
        raise RequestInvalid(f"{first['field']}: {reason}", detail=detail) from None


def field_path(data: Any, loc: tuple[Any, ...]) -> str:
    """``loc`` as a dotted path into ``data``, without pydantic's labels of union branches and
    tagged-union members (``str``, ``list[...]``, ``tool_result``): a segment is kept when it
    leads into the value, or names a missing field of an object."""
    parts: list[str] = []
    for position, part in enumerate(loc):
        inside = isinstance(data, dict) and part in data
        inside |= isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if inside:
            data = data[part]
        elif not (isinstance(data, dict) and position == len(loc) - 1):
            continue
        parts.append(str(part))
    return ".".join(parts) or "(body)"


def to_chat(request: Conversation) -> ChatCompletionRequest:
    """The chat request that generates (or, for count_tokens, counts) ``request``'s answer."""
    check_supported(request)
    body: dict[str, Any] = {"model": request.model, "messages": chat_messages(request)}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema.model_dump(),
                },
            }
            for tool in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = _tool_choice(choice)
        if getattr(choice, "disable_parallel_tool_use", None):
            body["parallel_tool_calls"] = False
    if isinstance(request, MessagesRequest):
        body.update(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            stream=request.stream,
            user=request.metadata.user_id if request.metadata else None,
        )
    if request.mock is not None:
        body["mock"] = request.mock
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:  # a rule of the chat request (its fields are named alike)
        detail = validation_detail(exc)
        reason = detail[0]["message"].removeprefix("Value error, ")
        raise RequestInvalid(f"{detail[0]['field']}: {reason}", detail=detail) from None


def check_supported(request: Conversation) -> None:
    """Raise the 400 for what no JSON Schema can refuse: a final assistant turn."""
    if request.messages[-1].role == "assistant":
        raise refused(f"messages.{len(request.messages) - 1}", NO_PREFILL)


def chat_messages(request: Conversation) -> list[dict[str, Any]]:
    """The chat messages of ``request``: system first, turns of one role combined."""
    out: list[dict[str, Any]] = []
    if request.system is not None:  # even "": a template may add its own default otherwise
        out.append({"role": "system", "content": _parts(request.system)})
    for message in request.messages:
        for item in _translate(message):
            last = out[-1] if out else None
            if last is not None and item["role"] == last["role"] and item["role"] != "tool":
                _combine(last, item)
            else:
                out.append(item)
    return out


def _translate(message: MessageParam) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": _parts(message.content)}]
    if message.role == "user":
        results = [
            {"role": "tool", "tool_call_id": block.tool_use_id, "content": _result_text(block)}
            for block in message.content
            if block.type == "tool_result"
        ]
        texts = [block for block in message.content if block.type == "text"]
        return results + ([{"role": "user", "content": _parts(texts)}] if texts else [])
    item: dict[str, Any] = {"role": "assistant", "content": []}
    for block in message.content:
        if block.type == "text":
            item["content"] += _parts([block])
        elif block.type == "thinking":
            item["reasoning_content"] = item.get("reasoning_content", "") + block.thinking
        elif block.type == "tool_use":
            item.setdefault("tool_calls", []).append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": json.dumps(block.input)},
                }
            )
    if not item["content"] and item.get("tool_calls"):
        item["content"] = None
    return [item]


def _tool_choice(choice: ToolChoiceParam) -> str | dict[str, Any]:
    if choice.type == "any":
        return "required"
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.type


def _combine(into: dict[str, Any], item: dict[str, Any]) -> None:
    """Append ``item`` (same role) to ``into``: content parts, tool calls, reasoning."""
    into["content"] = (into["content"] or []) + (item["content"] or [])
    if item.get("tool_calls"):
        into["tool_calls"] = into.get("tool_calls", []) + item["tool_calls"]
    if item.get("reasoning_content"):
        into["reasoning_content"] = into.get("reasoning_content", "") + item["reasoning_content"]
    if not into["content"] and into.get("tool_calls"):
        into["content"] = None


def _parts(content: str | list[TextBlockParam]) -> list[dict[str, str]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{"type": "text", "text": block.text} for block in content]


def _result_text(block: Any) -> str:
    text = (
        block.content
        if isinstance(block.content, str)
        else "".join(part.text for part in block.content)
    )
    return f"Error: {text}" if block.is_error else text
