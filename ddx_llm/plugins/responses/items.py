"""Input items: validated one by one, then kept in the shape ``GET …/input_items`` lists them.

Accepted items (``input.N``): messages (``role`` ``user`` / ``system`` / ``developer`` /
``assistant``; ``content`` a string or ``input_text`` / ``output_text`` / ``refusal`` parts),
``function_call``, ``function_call_output`` (a string, or ``input_text`` parts), ``reasoning``
(without ``encrypted_content``: this service never makes any), and ``item_reference`` (the id
of an item of a response stored for the same client; resolved by the caller with
:func:`references`).  Image, file and audio parts and every built-in tool's item are refused
naming the item.  Descriptive fields a client echoes back from an earlier output (``status``,
``annotations``, ``logprobs``, ``phase`` …) are accepted and not used.

Every normalized item has an ``id`` (the client's, or a new one) and ``status: "completed"``.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .request import refuse, validate_at

LOOSE = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")
REFUSED_PARTS = {
    "input_image": "image inputs are not supported",
    "input_file": "file inputs are not supported",
    "input_audio": "audio inputs are not supported",
}
TOOL_ITEMS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "tool_search_call",
        "tool_search_output",
        "compaction",
        "configuration_update",
    }
)
PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def new_id(kind: str) -> str:
    """A fresh item id in OpenAI's style (``msg_…``, ``fc_…``, ``rs_…``)."""
    return f"{PREFIX.get(kind, kind)}_{uuid.uuid4().hex}"


class Message(BaseModel):
    model_config = LOOSE

    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[Any]
    id: str | None = None


class FunctionCall(BaseModel):
    model_config = LOOSE

    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None


class FunctionCallOutput(BaseModel):
    model_config = LOOSE

    call_id: str = Field(min_length=1)
    output: str | list[Any]
    id: str | None = None


class TextPart(BaseModel):
    model_config = LOOSE

    type: Literal["summary_text", "reasoning_text"]
    text: str


class Reasoning(BaseModel):
    model_config = LOOSE

    id: str | None = None
    summary: list[TextPart] = []
    content: list[TextPart] | None = None
    encrypted_content: None = Field(
        default=None, description="Never made here, so never accepted back."
    )


class Reference(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    type: Literal["item_reference"] = "item_reference"
    id: str = Field(min_length=1)


def parse_input(value: str | list[Any]) -> list[dict[str, Any] | Reference]:
    """``input`` as normalized items, in order; ``item_reference`` entries stay
    :class:`Reference` for the caller to resolve.  Raises RequestInvalid naming the item."""
    if isinstance(value, str):
        return [_message(Message(role="user", content=value), "input")]
    return [_item(raw, f"input.{i}") for i, raw in enumerate(value)]


def _item(raw: Any, path: str) -> dict[str, Any] | Reference:
    if not isinstance(raw, dict):
        raise refuse(path, "an input item is a JSON object")
    kind = raw.get("type")
    if kind is None:
        kind = "message" if "role" in raw else "item_reference"
    if kind == "message":
        return _message(validate_at(Message, raw, path), path)
    if kind == "function_call":
        call = validate_at(FunctionCall, raw, path)
        return _done(
            call.id, "function_call", call_id=call.call_id, name=call.name, arguments=call.arguments
        )
    if kind == "function_call_output":
        result = validate_at(FunctionCallOutput, raw, path)
        output = result.output
        if isinstance(output, list):
            output = [_part(part, f"{path}.output.{j}", "user") for j, part in enumerate(output)]
        return _done(result.id, "function_call_output", call_id=result.call_id, output=output)
    if kind == "reasoning":
        if raw.get("encrypted_content") is not None:
            raise refuse(f"{path}.encrypted_content", "this service makes no encrypted reasoning")
        thought = validate_at(Reasoning, raw, path)
        item = {
            "id": thought.id or new_id("reasoning"),
            "type": "reasoning",
            "summary": [part.model_dump() for part in thought.summary],
        }
        if thought.content is not None:
            item["content"] = [part.model_dump() for part in thought.content]
        return item
    if kind == "item_reference":
        return validate_at(Reference, raw, path)
    if kind in TOOL_ITEMS:
        raise refuse(f"{path}.type", f"{kind!r}: items of built-in tools are not supported")
    raise refuse(f"{path}.type", f"unknown input item type {kind!r}")


def _message(message: Message, path: str) -> dict[str, Any]:
    content = message.content
    if isinstance(content, str):
        parts = [_text_part(content, message.role)]
    else:
        parts = [_part(part, f"{path}.content.{j}", message.role) for j, part in enumerate(content)]
    return _done(message.id, "message", role=message.role, content=parts)


def _text_part(text: str, role: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def _part(part: Any, path: str, role: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise refuse(path, "a content part is a JSON object")
    kind = part.get("type")
    if kind in REFUSED_PARTS:
        raise refuse(path, REFUSED_PARTS[kind])
    if kind in ("input_text", "output_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise refuse(f"{path}.text", "a text part needs its text, a string")
        return _text_part(text, role)
    if kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
        return {"type": "refusal", "refusal": part["refusal"]}
    raise refuse(f"{path}.type", f"content part type {kind!r} is not supported here")


def _done(item_id: str | None, kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": item_id or new_id(kind), "type": kind, "status": "completed", **fields}


def text_of(parts: str | list[dict[str, Any]]) -> str:
    """The text of a content list (or of a string output)."""
    if isinstance(parts, str):
        return parts
    return "".join(part.get("text") or part.get("refusal") or "" for part in parts)


def references(parsed: list[dict[str, Any] | Reference]) -> list[str]:
    """The ids of the item references in ``parsed``, in order."""
    return [entry.id for entry in parsed if isinstance(entry, Reference)]


def resolve(
    parsed: list[dict[str, Any] | Reference], found: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """``parsed`` with each reference replaced by its stored item (``found``: id → item);
    the caller has checked that every id was found."""
    return [found[entry.id] if isinstance(entry, Reference) else entry for entry in parsed]
