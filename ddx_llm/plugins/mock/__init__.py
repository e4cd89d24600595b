"""The ``mock`` backend: deterministic answers for client developers, no model, no MLX.

Scenarios, chosen per request with the vendor field ``"mock": {"scenario": ..., "token_delay_ms":
...}`` (the OpenAI SDKs send it with ``extra_body``) or for the deployment in ``[mock]``:

- ``tool_call`` (default): the seed's canned answer, one ``get_weather`` call for Berlin,
  ``finish_reason: "tool_calls"``; streamed as OpenAI tool-call deltas.
- ``echo``: streams the last user message back word by word, honouring ``max_tokens``
  (``finish_reason: "length"``), ``stop`` and ``logprobs`` (each word certain: log probability 0).
- ``error``: streams two words of the echo, then fails with ``llm_error`` mid-stream (to test a
  client's error path).
- ``reasoning``: thinks before answering, as reasoning models do — ``Thinking about: <the last
  user message>`` word by word as reasoning (``reasoning_content`` in chat completions), then
  the echo as the answer; ``max_tokens`` counts both (a limit reached while thinking ends with
  ``length`` and no answer).

Token counts are estimates (about four characters a token); each streamed piece counts as one
completion token.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ddx_llm import hookimpl
from ddx_llm.backend import BackendBase, Delta, Prompt, ToolCallDelta, Usage, estimate_tokens
from ddx_llm.config import SectionSettings
from ddx_llm.errors import LlmError, RequestInvalid, validation_detail
from ddx_llm.registry import ModelEntry
from ddx_llm.schemas import ChatCompletionRequest, TokenLogprob, TopLogprob

Scenario = Literal["tool_call", "echo", "error", "reasoning"]

CANNED_CALL = ("call_0", "get_weather", ['{"city":', '"Berlin"}'])
"""The seed's canned tool call: id, function name, and the arguments as streamed pieces."""


class MockSettings(SectionSettings):
    """``[mock]``: the deployment's default scenario and per-token delay."""

    scenario: Scenario = "tool_call"
    token_delay_ms: float = Field(default=0, ge=0, le=10_000)


class MockOptions(BaseModel):
    """The per-request ``mock`` field."""

    model_config = ConfigDict(extra="forbid")

    scenario: Scenario | None = None
    token_delay_ms: float | None = Field(default=None, ge=0, le=10_000)


class MockBackend(BackendBase):
    """Answers without a model; any registered model id is served."""

    name = "mock"
    real_model_mode = False

    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings

    async def load(self, entry: ModelEntry) -> ModelEntry:
        return entry

    async def unload(self, handle: Any) -> None:
        return None

    async def prepare(
        self, handle: Any, entry: ModelEntry, request: ChatCompletionRequest
    ) -> Prompt:
        options = self._options(request)
        tokens = sum(estimate_tokens(message.text()) + 4 for message in request.messages)
        if request.tools:
            tokens += estimate_tokens(str([tool.model_dump() for tool in request.tools]))
        return Prompt(tokens=tokens, data=options)

    def _options(self, request: ChatCompletionRequest) -> MockOptions:
        raw = (request.model_extra or {}).get("mock") or {}
        try:
            options = MockOptions.model_validate(raw)
        except ValidationError as exc:
            raise RequestInvalid("invalid mock options", detail=validation_detail(exc)) from None
        return MockOptions(
            scenario=options.scenario or self.settings.scenario,
            token_delay_ms=(
                self.settings.token_delay_ms
                if options.token_delay_ms is None
                else options.token_delay_ms
            ),
        )

    async def generate(
        self, handle: Any, entry: ModelEntry, prompt: Prompt, request: ChatCompletionRequest
    ) -> AsyncIterator[Delta]:
        options: MockOptions = prompt.data
        delay = (options.token_delay_ms or 0) / 1000
        text = last_user_text(request)
        if options.scenario == "tool_call":
            pieces = tool_call_pieces()
        elif options.scenario == "reasoning":
            pieces = reasoning_pieces(text, request)
        else:
            pieces = echo_pieces(text, request, fail=options.scenario == "error")
        generated = 0
        for delta in pieces:
            if delay and delta.tokens:
                await anyio.sleep(delay)
            generated += delta.tokens
            if delta.finish_reason:
                delta.usage = Usage(prompt.tokens, generated)
            elif delta.content and request.logprobs:
                delta.logprobs = [certain(delta.content, request.top_logprobs or 0)]
            yield delta


def tool_call_pieces() -> list[Delta]:
    """The canned call as deltas: id and name first, then the arguments in two pieces."""
    call_id, name, arguments = CANNED_CALL
    return [
        Delta(tool_calls=[ToolCallDelta(0, id=call_id, name=name)], tokens=1),
        *(Delta(tool_calls=[ToolCallDelta(0, arguments=part)], tokens=1) for part in arguments),
        Delta(finish_reason="tool_calls"),
    ]


def echo_pieces(text: str, request: ChatCompletionRequest, *, fail: bool = False):
    """Yield the words of ``text`` (each with its leading space), stopping at ``max_tokens``
    (``length``) or before the first ``stop`` string (``stop``)."""
    limit = request.completion_limit
    stops = request.stop or []
    emitted = ""
    for count, word in enumerate(re.findall(r"\s*\S+", text)):
        if fail and count == 2:
            raise LlmError("mock failure (scenario 'error')", detail="raised on purpose mid-stream")
        if limit is not None and count >= limit:
            yield Delta(finish_reason="length")
            return
        candidate = emitted + word
        cut = min((i for i in (candidate.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            if cut > len(emitted):
                yield Delta(content=candidate[len(emitted) : cut], tokens=1)
            yield Delta(finish_reason="stop")
            return
        emitted = candidate
        yield Delta(content=word, tokens=1)
    yield Delta(finish_reason="stop")


def reasoning_pieces(text: str, request: ChatCompletionRequest):
    """``Thinking about: <text>`` word by word as reasoning, then the echo of ``text``; the
    completion limit counts both."""
    limit = request.completion_limit
    thoughts = re.findall(r"\s*\S+", f"Thinking about: {text}")
    for count, word in enumerate(thoughts):
        if limit is not None and count >= limit:
            yield Delta(finish_reason="length")
            return
        yield Delta(reasoning=word, tokens=1)
    left = None if limit is None else limit - len(thoughts)
    yield from echo_pieces(
        text, request.model_copy(update={"max_tokens": left, "max_completion_tokens": None})
    )


def certain(piece: str, top: int) -> TokenLogprob:
    """The log probability of a deterministic piece: 0.0 (probability 1), itself the only
    alternative worth listing."""
    data = list(piece.encode())
    alternatives = [TopLogprob(token=piece, logprob=0.0, bytes=data)] if top else []
    return TokenLogprob(token=piece, logprob=0.0, bytes=data, top_logprobs=alternatives)


def last_user_text(request: ChatCompletionRequest) -> str:
    return next((m.text() for m in reversed(request.messages) if m.role == "user"), "")


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return ("mock", MockSettings)


@hookimpl
def ddx_llm_backends() -> dict[str, Any]:
    return {"mock": lambda app: MockBackend(app.settings.section("mock"))}
