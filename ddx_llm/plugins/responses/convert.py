"""A Responses request and its conversation → the core's :class:`ChatCompletionRequest`.

The conversation is a list of normalized items (:mod:`.items`): those of the previous
response's context and output when ``previous_response_id`` is given, then this request's
``input``.  ``instructions`` become a leading system message of this request only (OpenAI's
rule: they are not carried over to the next response).  Consecutive ``function_call`` items
join the assistant message before them as its ``tool_calls``; a ``function_call_output`` is a
``tool`` message.  ``reasoning`` items are not sent to the model: chat templates drop a previous
turn's thinking, as reasoning models are trained to see it.
"""

from __future__ import annotations

import re
from typing import Any

from ddx_llm.api.json_body import parse_as
from ddx_llm.errors import RequestInvalid
from ddx_llm.schemas import ChatCompletionRequest

from .items import text_of
from .request import FunctionChoice, FunctionTool, ResponsesRequest, refuse


def chat_request(request: ResponsesRequest, conversation: list[dict[str, Any]]) -> Any:
    """The chat request that generates this response (RequestInvalid when nothing is to be
    answered)."""
    messages = chat_messages(conversation)
    if not messages:
        raise refuse("input", "there is nothing to answer: give at least one message")
    if request.instructions is not None:  # "" too: an empty system turn replaces a default one
        messages.insert(0, {"role": "system", "content": request.instructions})
    data: dict[str, Any] = {
        **request.vendor_fields(),
        "messages": messages,
        "model": request.model,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_completion_tokens": request.max_output_tokens,
        "parallel_tool_calls": request.parallel_tool_calls,
        "stream": request.stream,
        "user": request.user,
    }
    if request.tools:
        data["tools"] = [_tool(FunctionTool.model_validate(tool)) for tool in request.tools]
    choice = request.tool_choice
    if isinstance(choice, dict):
        data["tool_choice"] = {
            "type": "function",
            "function": {"name": FunctionChoice.model_validate(choice).name},
        }
    elif choice is not None:
        data["tool_choice"] = choice
    if request.want_logprobs:
        data["logprobs"] = True
        data["top_logprobs"] = request.top_logprobs or 0
    form = request.text.format if request.text else None
    if form is not None and form.type == "json_object":
        data["response_format"] = {"type": "json_object"}
    elif form is not None and form.type == "json_schema":
        schema = {"name": form.name, "schema": form.schema_}
        if form.strict is not None:
            schema["strict"] = form.strict
        if form.description is not None:
            schema["description"] = form.description
        data["response_format"] = {"type": "json_schema", "json_schema": schema}
    return parse_as(ChatCompletionRequest, {k: v for k, v in data.items() if v is not None})


def _tool(tool: FunctionTool) -> dict[str, Any]:
    function = tool.model_dump(exclude={"type"}, exclude_none=True)
    return {"type": "function", "function": function}


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation's items as chat messages (see the module docstring)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append({"role": item["role"], "content": text_of(item["content"])})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            content = text_of(item["output"])
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
    return messages


FIELDS = [
    (re.compile(r"(?<![\w.])(?:max_completion_tokens|max_tokens)(?!\w)"), "max_output_tokens"),
    (re.compile(r"(?<![\w.])logprobs(?!\w)"), "include"),
    (re.compile(r"(?<![\w.])response_format(?:\.json_schema)?(?![\w.])"), "text.format"),
    (re.compile(r"(?<![\w.])response_format\.json_schema\.(?=\w)"), "text.format."),
    (re.compile(r"(?<![\w.])response_format(?!\w)"), "text.format"),
    (re.compile(r"(?<![\w.])(tools\.\d+)\.function(?!\w)"), r"\1"),
    (re.compile(r"(?<![\w.])messages(?:\.[\w.]*\w)?(?!\w)"), "input"),
]
"""Chat request fields → the Responses fields they came from (for the backend's refusals)."""


def responses_fields(exc: RequestInvalid) -> RequestInvalid:
    """A backend's refusal of the chat request, restated with the fields the client sent
    (``include`` rather than ``logprobs``, ``text.format`` rather than ``response_format`` …)."""

    def rename(text: str) -> str:
        for pattern, name in FIELDS:
            text = pattern.sub(name, text)
        return text

    detail = exc.detail
    if isinstance(detail, list):
        detail = [
            {**item, "field": rename(item["field"])}
            if isinstance(item, dict) and isinstance(item.get("field"), str)
            else item
            for item in detail
        ]
    return RequestInvalid(rename(exc.message), detail=detail, headers=exc.headers)
