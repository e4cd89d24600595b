"""A legacy text-completion request → the core's :class:`~ddx_llm.schemas.ChatCompletionRequest`.

:class:`CompletionRequest` is OpenAI's ``CreateCompletionRequest``, validated strictly as the
chat request is (a number is a JSON number, ``"10"`` is not).  :func:`to_chat` translates it
into a chat request of one user message holding the prompt, and refuses with 422
``request_invalid`` naming the field what no backend here can honour — never a silent ignore:

- ``prompt`` given as token ids, or as several prompts (a batch): one text prompt per request;
- ``n`` and ``best_of`` other than 1: one choice per request, as for chat;
- ``suffix`` (insertion between a prompt and a suffix): no backend fills in the middle;
- ``echo`` with ``logprobs``: it asks for the prompt's log probabilities, which no backend
  computes;
- ``max_tokens: 0`` (scoring the prompt without generating): ask for at least one token.

A raw prompt (``[completions] prompt = "raw"``) is marked with the vendor field
``raw_prompt: true`` on the chat request: a backend that declares ``raw_prompts = True`` then
gives the message's text to the model as it is, without a chat template (see the package
docstring).  ``max_tokens`` defaults to 16, as at OpenAI and in vLLM.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ddx_llm.errors import RequestInvalid, validation_detail
from ddx_llm.schemas import ChatCompletionRequest
from ddx_llm.schemas.request import INT64, MAX_TOKENS, Integer, LogitBias, Stops, StreamOptions

DEFAULT_MAX_TOKENS = 16
"""OpenAI's (and vLLM's) ``max_tokens`` when a completion request sets none."""
RAW_PROMPT = "raw_prompt"
"""The vendor field of a chat request that asks for the prompt without a chat template."""

PASSED_ON = (
    "temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty",
    "logit_bias", "user",
)  # fmt: skip
"""Fields the chat request has under the same name and meaning."""

TextPrompt = Annotated[str, Field(description="The prompt, given to the model as text.")]
TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(BaseModel):
    """``POST /v1/completions``: OpenAI's ``CreateCompletionRequest``.  Unknown fields are
    ignored (vendor fields such as ``mock`` go on to the backend); wrong types are refused."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    model: str | None = Field(
        default=None, description="A registry id; absent: the model loaded now."
    )
    prompt: TextPrompt | list[TextPrompt] | TokenIds | list[TokenIds] = Field(
        description="One text prompt (a string, or a list of one string).  Token ids and "
        "several prompts at once are refused with 422."
    )
    max_tokens: Integer(ge=0, le=MAX_TOKENS) | None = Field(
        default=None, description="Tokens to generate (default 16, as at OpenAI); 0 is refused."
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: Stops | None = Field(default=None, description="Up to 4 non-empty strings.")
    seed: Integer(ge=-INT64, le=INT64 - 1) | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: Integer(ge=0, le=5) | None = Field(
        default=None,
        description="Log probabilities of the sampled tokens and of up to 5 "
        "most likely alternatives each.",
    )
    echo: bool | None = Field(default=None, description="Prepend the prompt to the text.")
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: LogitBias | None = None
    n: Integer(ge=1, le=128) | None = Field(default=None, description="Only 1 is supported.")
    best_of: Integer(ge=0, le=20) | None = Field(default=None, description="Only 1 is supported.")
    suffix: str | None = Field(default=None, description="Refused unless empty.")
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def refused(field: str, reason: str) -> RequestInvalid:
    """The 422 for a field this surface cannot honour."""
    return RequestInvalid(
        f"{field}: {reason}", detail=[{"field": field, "message": reason, "type": "unsupported"}]
    )


def prompt_text(request: CompletionRequest) -> str:
    """The one text prompt of ``request``; RequestInvalid for token ids or a batch."""
    prompt = request.prompt
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if prompt and all(isinstance(item, str) for item in prompt):
        raise refused("prompt", "one prompt per request: send each prompt as its own request")
    raise refused(
        "prompt",
        "token-id prompts are not supported: send the prompt as text (the model's own "
        "tokenizer reads it)",
    )


def check_supported(request: CompletionRequest) -> None:
    """Raise the 422 for a parameter no backend here can honour."""
    if request.n not in (None, 1):
        raise refused("n", "n > 1 is not supported: ask for one choice per request")
    if request.best_of not in (None, 1):
        raise refused("best_of", "best_of other than 1 is not supported")
    if request.suffix:
        raise refused("suffix", "insertion (a suffix after the completion) is not supported")
    if request.max_tokens == 0:
        raise refused("max_tokens", "0 (scoring the prompt alone) is not supported: ask for 1+")
    if request.echo and request.logprobs is not None:
        raise refused(
            "echo",
            "echo with logprobs asks for the prompt's log probabilities, which no backend "
            "here computes; leave out one of them",
        )


def to_chat(request: CompletionRequest, *, raw: bool) -> ChatCompletionRequest:
    """The chat request that generates ``request``'s completion: one user message holding the
    prompt, marked ``raw_prompt`` when ``raw`` (the prompt is the model's whole input)."""
    check_supported(request)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": "user", "content": prompt_text(request)}],
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "stream": bool(request.stream),
    }
    for name in PASSED_ON:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.logprobs is not None:
        body.update(logprobs=True, top_logprobs=request.logprobs)
    for name, value in (request.model_extra or {}).items():
        # vendor fields (mock) go on; a chat field sent here (messages, tools ...) is not one,
        # and only this plugin decides whether a prompt is raw
        if name not in ChatCompletionRequest.model_fields and name != RAW_PROMPT:
            body[name] = value
    if raw:
        body[RAW_PROMPT] = True
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:  # a rule of the chat request (fields are named alike)
        detail = validation_detail(exc)
        reason = detail[0]["message"].removeprefix("Value error, ")
        raise RequestInvalid(f"{detail[0]['field']}: {reason}", detail=detail) from None
