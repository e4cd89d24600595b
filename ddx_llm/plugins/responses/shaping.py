"""The Response object: its fields from the request, its usage, its token log probabilities.

Bodies are plain JSON data (dicts) in the shape of OpenAI's ``Response`` (``object:
"response"``), so that what is streamed, answered, stored and read back is the same data; the
tests validate every one against the OpenAI SDK's own types.  The output items are written by
:class:`~.stream.ResponseRun` as the generation goes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ddx_llm.backend import Delta
from ddx_llm.errors import LlmError
from ddx_llm.schemas import TokenLogprob

from .request import FunctionChoice, FunctionTool, ResponsesRequest


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def base_response(request: ResponsesRequest, response_id: str, model: str) -> dict[str, Any]:
    """The response as ``response.created`` shows it: ``in_progress``, no output yet."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": request.safety_identifier,
        "service_tier": "default",
        "store": request.store,
        "temperature": request.temperature,
        "text": {"format": _text_format(request), "verbosity": "medium"},
        "tool_choice": _tool_choice(request),
        "tools": [_tool(tool) for tool in request.tools or []],
        "top_logprobs": request.top_logprobs or 0,
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
        "metadata": dict(request.metadata or {}),
    }


def _text_format(request: ResponsesRequest) -> dict[str, Any]:
    form = request.text.format if request.text else None
    if form is None:
        return {"type": "text"}
    return form.model_dump(by_alias=True, exclude_none=True)


def _tool_choice(request: ResponsesRequest) -> Any:
    choice = request.tool_choice
    if isinstance(choice, dict):
        return FunctionChoice.model_validate(choice).model_dump()
    return choice or "auto"


def _tool(raw: dict[str, Any]) -> dict[str, Any]:
    tool = FunctionTool.model_validate(raw)
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": tool.strict,
    }


def usage(last: Delta, reasoning_tokens: int) -> dict[str, Any]:
    """``usage`` from the last delta's counts (LlmError when the backend gave none)."""
    if last.usage is None:
        raise LlmError("the backend finished without usage counts")
    return {
        "input_tokens": last.usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": last.usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": last.usage.total_tokens,
    }


def logprobs(tokens: list[TokenLogprob] | None) -> list[dict[str, Any]]:
    """The core's token log probabilities in the Responses shape."""
    return [
        {
            "token": token.token,
            "bytes": token.bytes or list(token.token.encode()),
            "logprob": token.logprob,
            "top_logprobs": [
                {"token": top.token, "bytes": top.bytes or [], "logprob": top.logprob}
                for top in token.top_logprobs
            ],
        }
        for token in tokens or []
    ]


ERROR_CODES = {
    "rate_limited": "rate_limit_exceeded",
    "request_invalid": "invalid_prompt",
    "context_too_long": "invalid_prompt",
}
"""Our error codes → the codes OpenAI's ``ResponseError`` knows; the rest is ``server_error``."""


def response_error(code: str, message: str) -> dict[str, Any]:
    """A failed response's ``error`` (our own code rides along as ``type``)."""
    return {"code": ERROR_CODES.get(code, "server_error"), "message": message, "type": code}
