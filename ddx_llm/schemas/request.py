"""The OpenAI chat request: ``POST /v1/chat/completions`` and the types it is made of.

Requests are validated strictly, as OpenAI's API does: a number is a JSON number, a boolean a
JSON boolean, a string a JSON string (``"10"`` is not a number, ``true`` is not 1).  An integer
may be written ``10`` or ``10.0`` (both are JSON Schema integers).  Unknown fields are accepted
and ignored (``model_extra`` keeps them for backends that understand vendor extensions).  Every
rule is also in the JSON Schema (``/openapi.json``), so the document accepts exactly what the
validators do; the one cross-field rule JSON Schema cannot state (a named ``tool_choice`` names
one of ``tools``) is in the field's description.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

REQUEST = ConfigDict(strict=True, allow_inf_nan=False)
MAX_TOKENS = 2**31 - 1
"""Largest ``max_tokens`` accepted at all (a model's context window bounds it further)."""
INT64 = 2**63
SAMPLING_EXTENSIONS = ("top_k", "min_p")
"""Chat request fields that are not OpenAI's (vLLM's and llama.cpp's servers take them): every
API surface may hand them on as vendor fields."""
MAX_TOP_K = 2**31 - 1
"""Larger than any vocabulary: a top_k above the vocabulary's size keeps every token."""


def _integral(value: Any) -> Any:
    """Let an integral JSON number such as ``10.0`` be an integer, as JSON Schema does."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def Integer(**bounds: int) -> Any:
    """An integer field type with ``ge``/``le`` bounds (``10.0`` accepted as 10)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


NON_EMPTY = {"type": "string", "minLength": 1}
Stops = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    Field(max_length=4),
    BeforeValidator(_listed),
    WithJsonSchema(
        {"anyOf": [NON_EMPTY, {"type": "array", "items": NON_EMPTY, "maxItems": 4}]},
        mode="validation",
    ),
]
"""``stop``: one non-empty string or a list of up to 4; validated as the list."""

FORMATS = ("text", "json_object", "json_schema")


def _response_format(value: dict[str, Any]) -> dict[str, Any]:
    if "type" in value and value["type"] not in FORMATS:
        raise ValueError(f"type must be one of {', '.join(FORMATS)}")
    if "json_schema" in value or value.get("type") == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise ValueError("json_schema must be an object whose schema is an object")
    return value


ResponseFormat = Annotated[
    dict[str, Any],
    AfterValidator(_response_format),
    WithJsonSchema(
        {
            "type": "object",
            "description": "`type` text (the default), json_object, or json_schema with "
            "`json_schema.schema` a JSON Schema (one the backend's grammar engine cannot "
            "enforce gets 422).  Other fields are ignored.",
            "properties": {
                "type": {"enum": list(FORMATS)},
                "json_schema": {
                    "type": "object",
                    "properties": {"schema": {"type": "object"}},
                },
            },
            "if": {"required": ["type"], "properties": {"type": {"const": "json_schema"}}},
            "then": {"required": ["json_schema"]},
        },
        mode="validation",
    ),
]


def _tool_choice_needs_tools(schema: dict[str, Any]) -> None:
    schema["if"] = {
        "required": ["tool_choice"],
        "properties": {"tool_choice": {"anyOf": [{"const": "required"}, {"type": "object"}]}},
    }
    schema["then"] = {
        "required": ["tools"],
        "properties": {"tools": {"type": "array", "minItems": 1}},
    }


TOKEN_ID = r"^[0-9]+$"
LogitBias = Annotated[
    dict[Annotated[str, Field(pattern=TOKEN_ID)], Annotated[float, Field(ge=-100, le=100)]],
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": TOKEN_ID},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
        },
        mode="validation",
    ),
]


class FunctionCall(BaseModel):
    model_config = REQUEST

    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = REQUEST

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(BaseModel):
    """One part of a multi-part message content (``text``, ``image_url``, ...)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    type: str
    text: str | None = None


def _content_or_calls(schema: dict[str, Any]) -> None:
    schema["anyOf"] = [
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {
            "required": ["role", "tool_calls"],
            "properties": {
                "role": {"const": "assistant"},
                "tool_calls": {"type": "array", "minItems": 1},
            },
        },
    ]


class ChatMessage(BaseModel):
    """A message of the conversation.  Every role needs ``content`` (a string or a list of
    parts); an assistant message may have ``tool_calls`` (at least one) instead."""

    model_config = ConfigDict(
        extra="allow", strict=True, allow_inf_nan=False, json_schema_extra=_content_or_calls
    )

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        """The message's text: the string content, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content or [])


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = REQUEST

    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    name: str


class NamedToolChoice(BaseModel):
    model_config = REQUEST

    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``.  Unknown fields are ignored (kept in ``model_extra`` for
    backends that understand vendor extensions); wrong types are rejected (strictly: see the
    comment above)."""

    model_config = ConfigDict(
        extra="allow", strict=True, allow_inf_nan=False, json_schema_extra=_tool_choice_needs_tools
    )

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: Integer(ge=0, le=MAX_TOP_K) | None = Field(
        default=None,
        description="Sample only from the k most likely tokens; 0 or absent: no limit "
        "(an extension, as vLLM's and llama.cpp's servers).",
    )
    min_p: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Drop tokens less likely than min_p times the most likely one; 0 or "
        "absent: off (an extension, as vLLM's and llama.cpp's servers).",
    )
    max_tokens: Integer(ge=1, le=MAX_TOKENS) | None = None
    max_completion_tokens: Integer(ge=1, le=MAX_TOKENS) | None = None
    stop: Stops | None = Field(default=None, description="Up to 4 non-empty strings.")
    seed: Integer(ge=-INT64, le=INT64 - 1) | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None,
        description="`required` or a named function needs `tools`; the name must be one of them.",
    )
    parallel_tool_calls: bool | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: Integer(ge=0, le=20) | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: LogitBias | None = Field(
        default=None, description="Token id (a decimal string) to a bias in [-100, 100]."
    )
    response_format: ResponseFormat | None = None
    n: Integer() = Field(
        default=1, description="Only 1 is supported.", json_schema_extra={"const": 1}
    )
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _single_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("n > 1 is not supported: ask for one choice per request")
        return n

    @field_validator("tool_choice")
    @classmethod
    def _forced_tool_is_given(cls, choice: Any, info: ValidationInfo) -> Any:
        names = [tool.function.name for tool in info.data.get("tools") or []]
        if (choice == "required" or isinstance(choice, NamedToolChoice)) and not names:
            raise ValueError("forces a tool call, but the request gives no tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"names the function {choice.function.name!r}, not one of tools")
        return choice

    @property
    def completion_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)
