"""The Anthropic Messages request bodies, as pydantic models: validation and ``/openapi.json``.

``POST /v1/messages`` takes :class:`MessagesRequest`, ``POST /v1/messages/count_tokens``
:class:`CountTokensRequest`.  As Anthropic's API does, every object refuses a field it does not
know and types are strict (400 naming the field): a field that changes what the model does is
never silently dropped.  The JSON Schema generated from these models says exactly what is
accepted — the roles' content blocks, the tool-choice and thinking kinds, the bounds — but for
the rules only words can state (:mod:`.request`): a final assistant turn is refused, a forced
``tool_choice`` names one of ``tools``, prompt plus ``max_tokens`` fit the context window.
What this service cannot serve at all is refused with the reason: images, documents, built-in
server tools, ``thinking`` ``disabled``.

``cache_control`` is accepted wherever Anthropic allows it: prompt caching is automatic here
(the mlx backend keeps processed prompts and reuses their shared prefix without being asked).
The vendor field ``mock`` (``{"scenario": ..., "token_delay_ms": ...}``) goes to the mock
backend as in chat completions; it is left out of the document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

UNSUPPORTED_BLOCKS = {
    "image": "image blocks are not supported: the models served here read text",
    "document": "document blocks are not supported: send the text as a text block",
    "search_result": "search_result blocks are not supported",
    "container_upload": "container_upload blocks are not supported (no code execution here)",
}
"""Content blocks Anthropic defines that this service refuses, with the reason."""
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_TOKENS = 2**31 - 1
"""The largest ``max_tokens`` the core accepts at all (a model's context bounds it further)."""


def _integral(value: Any) -> Any:
    """An integral JSON number such as ``10.0`` is an integer, as JSON Schema says."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]


def _forcing_needs_tools(schema: dict[str, Any]) -> None:
    """JSON Schema for "a forcing tool_choice (any, tool) needs tools"."""
    schema["if"] = {
        "required": ["tool_choice"],
        "properties": {"tool_choice": {"properties": {"type": {"enum": ["any", "tool"]}}}},
    }
    schema["then"] = {"required": ["tools"], "properties": {"tools": {"minItems": 1}}}


class Strict(BaseModel):
    """Unknown fields are refused, as Anthropic's API does, and types are strict: a number is a
    JSON number, a string a JSON string (``"10"`` is not 10)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CacheControlParam(Strict):
    """A prompt-caching breakpoint: accepted; caching is automatic here."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlockParam(Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControlParam | None = None
    citations: None = Field(default=None, description="Citations are not supported: null only.")


class ThinkingBlockParam(Strict):
    """An earlier answer's thinking, sent back: it reaches the chat template as the assistant
    turn's ``reasoning_content`` (templates that know it may drop it from older turns)."""

    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class RedactedThinkingBlockParam(Strict):
    """Opaque thinking another service encrypted: nothing a model here can read, so it is left
    out of the prompt."""

    type: Literal["redacted_thinking"]
    data: str


class ToolUseBlockParam(Strict):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: CacheControlParam | None = None


class ToolResultBlockParam(Strict):
    """The result of a tool call; with ``is_error`` it reaches the model as ``Error: <text>``
    (chat templates have no error flag)."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlockParam] = ""
    is_error: bool = False
    cache_control: CacheControlParam | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        return _refuse_unsupported(value)


def _refuse_unsupported(value: Any) -> Any:
    """Name the reason for a block type Anthropic defines but this service cannot serve."""
    if isinstance(value, list):
        for index, block in enumerate(value):
            kind = block.get("type") if isinstance(block, dict) else None
            if isinstance(kind, str) and kind in UNSUPPORTED_BLOCKS:
                raise ValueError(f"block {index}: {UNSUPPORTED_BLOCKS[kind]}")
    return value


UserBlock = Annotated[TextBlockParam | ToolResultBlockParam, Field(discriminator="type")]
AssistantBlock = Annotated[
    TextBlockParam | ThinkingBlockParam | RedactedThinkingBlockParam | ToolUseBlockParam,
    Field(discriminator="type"),
]


class UserMessageParam(Strict):
    role: Literal["user"]
    content: str | list[UserBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _supported_blocks(cls, value: Any) -> Any:
        return _refuse_unsupported(value)


class AssistantMessageParam(Strict):
    role: Literal["assistant"]
    content: str | list[AssistantBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _supported_blocks(cls, value: Any) -> Any:
        return _refuse_unsupported(value)


MessageParam = Annotated[UserMessageParam | AssistantMessageParam, Field(discriminator="role")]


class InputSchema(BaseModel):
    """A tool's JSON schema; its top level must be an object, as Anthropic requires."""

    model_config = ConfigDict(extra="allow")

    type: Literal["object"]


class ToolParam(Strict):
    """A client tool (``type`` ``custom`` or absent).  Anthropic's built-in tools (web search,
    bash, the text editor, computer use, ...) carry another ``type`` and are refused."""

    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    input_schema: InputSchema
    type: Literal["custom"] | None = None
    cache_control: CacheControlParam | None = None
    eager_input_streaming: bool | None = Field(
        default=None,
        description="Accepted: a tool's input streams as the backend produces it (the mock in "
        "pieces, mlx whole once the call is parsed); the hint changes chunking, never content.",
    )
    strict: Literal[False] | None = Field(
        default=None,
        description="`true` (guaranteed schema-valid input) needs constrained decoding: refused.",
    )

    @model_validator(mode="before")
    @classmethod
    def _client_tool(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") not in (None, "custom"):
            raise ValueError(
                f"built-in tool {data.get('type')!r} is not available here: only client tools "
                "(name, description, input_schema) are"
            )
        return data


class ToolChoiceAuto(Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Strict):
    """A call to one of the tools, forced: the backend honours or refuses it."""

    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Strict):
    """A call to the tool ``name`` (one of ``tools``), forced: the backend honours or refuses
    it."""

    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Strict):
    type: Literal["none"]


ToolChoiceParam = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class ThinkingEnabled(Strict):
    """A model that thinks returns its thinking as ``thinking`` blocks (one that does not, does
    not).  ``budget_tokens`` is not enforced apart: ``max_tokens`` bounds thinking and answer."""

    type: Literal["enabled"]
    budget_tokens: Integer = Field(ge=1024, le=MAX_TOKENS)
    display: Literal["summarized"] | None = None


class ThinkingAdaptive(Strict):
    type: Literal["adaptive"]
    display: Literal["summarized"] | None = None


ThinkingConfigParam = Annotated[ThinkingEnabled | ThinkingAdaptive, Field(discriminator="type")]


def _thinking_switch(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") == "disabled":
        raise ValueError(
            "thinking cannot be switched off per request yet: a model that thinks does so by "
            "its chat template; leave thinking out, or use 'enabled' or 'adaptive'"
        )
    return value


class MetadataParam(Strict):
    user_id: str | None = Field(default=None, max_length=256)


class Conversation(Strict):
    """What both routes share: the model, the turns, the system prompt, the tools."""

    model_config = ConfigDict(json_schema_extra=_forcing_needs_tools)

    model: str = Field(min_length=1, description="A registry id (GET /v1/models).")
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlockParam] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: Annotated[ThinkingConfigParam | None, BeforeValidator(_thinking_switch)] = None
    cache_control: CacheControlParam | None = None
    mock: SkipJsonSchema[dict[str, Any] | None] = None
    """Vendor field for the mock backend's scenario and pacing (left out of the document: the
    mock backend validates it)."""


class MessagesRequest(Conversation):
    """``POST /v1/messages``."""

    max_tokens: Integer = Field(ge=1, le=MAX_TOKENS)
    stop_sequences: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=64
    )
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: Integer | None = Field(
        default=None, ge=0, description="Sample only from the k most likely tokens (0: no limit)."
    )
    metadata: MetadataParam | None = None
    stream: bool = False
    service_tier: Literal["auto", "standard_only"] | None = Field(
        default=None, description="One standard tier serves every request."
    )


class CountTokensRequest(Conversation):
    """``POST /v1/messages/count_tokens``: the prompt part of a Messages request."""
