"""The Anthropic Messages answers, as pydantic models: the ``Message``, the stream events, the
token count and the error body.  :mod:`.shaping` builds its output with them and
``/openapi.json`` documents them; the tests validate what they produce against the ``anthropic``
SDK's own types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    """The model's thinking before its answer.  ``signature`` is empty: nothing here verifies
    thinking sent back, so nothing is signed."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = Annotated[TextBlock | ThinkingBlock | ToolUseBlock, Field(discriminator="type")]


class Usage(BaseModel):
    input_tokens: int = Field(description="Tokens of the rendered prompt (its chat template).")
    output_tokens: int


class Message(BaseModel):
    """The answer of ``POST /v1/messages`` without ``stream``."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class TokenCount(BaseModel):
    """The answer of ``POST /v1/messages/count_tokens``."""

    input_tokens: int


# --------------------------------------------------------------------------- stream events


class MessageStart(BaseModel):
    """First event.  ``usage.input_tokens`` is the prompt's size (the backend counts it before
    the first token); ``message_delta`` repeats it with the output's count."""

    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStart(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ThinkingDelta(BaseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


BlockDelta = Annotated[TextDelta | InputJsonDelta | ThinkingDelta, Field(discriminator="type")]


class ContentBlockDelta(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: BlockDelta


class ContentBlockStop(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDeltaBody(BaseModel):
    stop_reason: StopReason
    stop_sequence: str | None = None


class MessageDeltaUsage(BaseModel):
    """Cumulative counts: the exact prompt count and the output tokens."""

    input_tokens: int
    output_tokens: int


class MessageDelta(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDeltaBody
    usage: MessageDeltaUsage


class MessageStop(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class Ping(BaseModel):
    """Sent while nothing else was for ``[messages] ping_seconds`` (a long prompt prefill)."""

    type: Literal["ping"] = "ping"


StreamEvent = (
    MessageStart
    | ContentBlockStart
    | ContentBlockDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
    | Ping
)


# --------------------------------------------------------------------------- errors


class ErrorObject(BaseModel):
    type: str = Field(
        description="invalid_request_error, authentication_error, permission_error, "
        "not_found_error, request_too_large, rate_limit_error, api_error, overloaded_error"
    )
    message: str


class ErrorResponse(BaseModel):
    """Every error of the Messages routes (and the in-band ``event: error`` of a stream):
    Anthropic's shape, with the service's own ``code``, ``message`` and ``detail`` beside it."""

    type: Literal["error"] = "error"
    error: ErrorObject
    request_id: str | None = None
    code: str
    message: str
    detail: Any = None
