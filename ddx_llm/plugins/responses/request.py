"""The ``POST /v1/responses`` body: what is accepted, what is refused, and why.

Validation is strict, as the core's chat request is (a number is a JSON number, a boolean a JSON
boolean).  A field of OpenAI's Responses API that this service cannot honour is refused with
422 ``request_invalid`` naming it (:data:`REFUSED`, and the checks in :func:`parse_request`) —
never silently ignored.  A field that belongs to chat completions but not to the Responses API
(``max_tokens``, ``messages``, ``stop`` …) is refused too, with the Responses field to use where
there is one.  Any other unknown field is a vendor extension handed on to the backend, as on
``/v1/chat/completions`` (``mock`` selects a mock scenario; ``top_k`` and ``min_p`` sample).

``input`` is kept as raw JSON here; :mod:`.items` validates it item by item, so that an error
names the item (``input.2.content.0``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ddx_llm.api.json_body import parse_as
from ddx_llm.errors import RequestInvalid, validation_detail
from ddx_llm.schemas import ChatCompletionRequest
from ddx_llm.schemas.request import SAMPLING_EXTENSIONS

M = TypeVar("M", bound=BaseModel)
LOGPROBS = "message.output_text.logprobs"


def _integral(value: Any) -> Any:
    """An integral JSON number (``16.0``) is an integer, as JSON Schema says."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def Integer(**bounds: int) -> Any:
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]


class FunctionTool(BaseModel):
    """A function the model may call (``{"type": "function", "name", "parameters", …}``)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    """``text.format``: ``text``, ``json_object``, or ``json_schema`` (name, schema, strict)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    include_obfuscation: bool | None = None


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``.  See the module docstring for what is refused."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

    model: str | None = None
    input: str | list[Any] = Field(description="A user message, or a list of input items.")
    instructions: str | None = None
    max_output_tokens: Integer(ge=1, le=2**31 - 1) | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    metadata: Metadata | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    store: bool = True
    previous_response_id: str | None = None
    text: TextConfig | None = None
    include: list[str] | None = None
    top_logprobs: Integer(ge=0, le=20) | None = None
    reasoning: ReasoningConfig | None = None
    truncation: Literal["disabled", "auto"] | None = None
    background: bool | None = None
    service_tier: str | None = None
    max_tool_calls: Integer(ge=1) | None = Field(
        default=None, description="Applies to built-in tools, which this service has none of."
    )
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None

    @property
    def want_logprobs(self) -> bool:
        return LOGPROBS in (self.include or []) or bool(self.top_logprobs)

    def vendor_fields(self) -> dict[str, Any]:
        """Unknown fields: handed on to the backend as vendor extensions."""
        return dict(self.model_extra or {})


REFUSED: dict[str, str] = {
    "conversation": "the Conversations API is not provided; continue with previous_response_id",
    "prompt": "stored prompt templates are not provided; send the input itself",
    "prompt_cache_retention": "the prompt cache is the model's own, without a retention promise",
    "context_management": "server-side context compaction is not provided",
}
"""Responses API fields that are refused whenever they are given (not null)."""

CHAT_ONLY: dict[str, str] = {
    "messages": "use input",
    "max_tokens": "use max_output_tokens",
    "max_completion_tokens": "use max_output_tokens",
    "response_format": "use text.format",
    "logprobs": f'use include: ["{LOGPROBS}"]',
    "n": "a response has one output",
}
"""Chat-completions fields sent here by mistake, with the Responses field to use."""

BUILT_IN_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "computer",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "custom",
        "apply_patch",
        "tool_search",
        "namespace",
    }
)


def refuse(field: str, message: str) -> RequestInvalid:
    """422 ``request_invalid`` naming ``field`` (dotted path, as validation errors are)."""
    return RequestInvalid(
        f"unsupported parameter {field}: {message}",
        detail=[{"field": field, "message": message, "type": "unsupported"}],
    )


def parse_request(body: Any) -> ResponsesRequest:
    """Validate ``body`` and refuse what cannot be honoured (raises RequestInvalid)."""
    request = parse_as(ResponsesRequest, body)
    for field, value in request.vendor_fields().items():
        if field in REFUSED and value is not None:
            raise refuse(field, REFUSED[field])
        if field in ChatCompletionRequest.model_fields and field not in SAMPLING_EXTENSIONS:
            hint = CHAT_ONLY.get(field, "use /v1/chat/completions for it")
            raise refuse(field, f"not a field of the Responses API; {hint}")
    _check_options(request)
    for i, tool in enumerate(request.tools or []):
        kind = tool.get("type")
        if kind != "function":
            why = "built-in tools are not provided" if kind in BUILT_IN_TOOLS else "unknown type"
            raise refuse(f"tools.{i}.type", f"{kind!r}: {why}; only function tools are")
        validate_at(FunctionTool, tool, f"tools.{i}")
    choice = request.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise refuse(
                "tool_choice",
                f"{choice.get('type')!r}: only none, auto, required or a function can be chosen",
            )
        validate_at(FunctionChoice, choice, "tool_choice")
    return request


def _check_options(request: ResponsesRequest) -> None:
    if request.background:
        raise refuse("background", "background responses are not provided; stream instead")
    if request.truncation == "auto":
        raise refuse(
            "truncation",
            "input is never truncated: too long an input is 422 context_too_long",
        )
    if request.service_tier not in (None, "auto", "default"):
        raise refuse("service_tier", "one service tier is offered: auto (default)")
    for i, value in enumerate(request.include or []):
        if value != LOGPROBS:
            raise refuse(f"include.{i}", f"{value!r} cannot be included; only {LOGPROBS!r}")
    reasoning = request.reasoning
    for field in ("effort", "summary", "generate_summary"):
        if reasoning is not None and getattr(reasoning, field) is not None:
            raise refuse(
                f"reasoning.{field}",
                "a model's reasoning is neither configurable nor summarised here; reasoning "
                "models return their thinking as reasoning items",
            )
    text = request.text
    if text is not None and text.verbosity not in (None, "medium"):
        raise refuse("text.verbosity", "only the default, medium, is offered")
    form = text.format if text else None
    if form is not None and form.type == "json_schema" and (form.schema_ is None or not form.name):
        raise refuse("text.format", "json_schema needs a name and a schema")


def validate_at(model: type[M], data: Any, path: str) -> M:
    """``data`` validated as ``model``; errors name fields under ``path`` (``tools.0.name``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = validation_detail(exc)
        for item in detail:
            item["field"] = path if item["field"] == "(body)" else f"{path}.{item['field']}"
        fields = ", ".join(item["field"] for item in detail)
        raise RequestInvalid(f"invalid request: {fields}", detail=detail) from None
