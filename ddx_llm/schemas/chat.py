"""The OpenAI chat schemas: the completion and the stream chunk (the request: :mod:`.request`).

The chat shapes follow OpenAI's published schemas (``openai/openai-openapi``): a completion
choice always has ``logprobs`` and its message ``refusal`` (null when empty); optional arrays
such as ``tool_calls`` are omitted rather than null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .request import ToolCall

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


def _omit_none(value: Any) -> bool:
    return value is None


def Omitted(**kwargs: Any) -> Any:
    """An optional field left out of the JSON when it is None."""
    return Field(default=None, exclude_if=_omit_none, **kwargs)


# --------------------------------------------------------------------------- response


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = Omitted()
    reasoning_content: str | None = Omitted(
        description="The model's thinking before its answer (reasoning models only)."
    )
    reasoning: str | None = Omitted(
        description="The same as `reasoning_content`, for clients that read this name."
    )


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = Omitted()


class FunctionCallDelta(BaseModel):
    name: str | None = Omitted()
    arguments: str | None = Omitted()


class ToolCallChunk(BaseModel):
    index: int
    id: str | None = Omitted()
    type: Literal["function"] | None = Omitted()
    function: FunctionCallDelta | None = Omitted()


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = Omitted()
    content: str | None = Omitted()
    tool_calls: list[ToolCallChunk] | None = Omitted()
    reasoning_content: str | None = Omitted(description="A piece of the model's thinking.")
    reasoning: str | None = Omitted(description="The same as `reasoning_content`.")


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = Omitted()


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Omitted()
    system_fingerprint: str | None = Omitted()
