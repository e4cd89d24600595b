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

A request that asks for structure gets it, whatever the scenario (:mod:`.structured`):
``response_format`` ``json_schema`` a deterministic schema-valid instance (the same schema, the
same instance), ``json_object`` ``{}``, ``tool_choice`` naming a function (or ``required``) a
call with schema-valid arguments.  This is how a client tests its JSON handling before going
real; a schema the engine cannot compile is 422 ``request_invalid``.

Token counts are estimates (about four characters a token); each streamed piece counts as one
completion token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ddx_llm import hookimpl
from ddx_llm.backend import BackendBase, Delta, Prompt, Usage, estimate_tokens
from ddx_llm.config import SectionSettings
from ddx_llm.errors import RequestInvalid, validation_detail
from ddx_llm.plugins.structured_output.requested import Constraint, constraint
from ddx_llm.registry import ModelEntry
from ddx_llm.schemas import ChatCompletionRequest

from .scenarios import certain, echo_pieces, last_user_text, reasoning_pieces, tool_call_pieces
from .structured import answer_for, structured_pieces

Scenario = Literal["tool_call", "echo", "error", "reasoning"]


class MockSettings(SectionSettings):
    """``[mock]``: the deployment's default scenario and per-token delay."""

    scenario: Scenario = "tool_call"
    token_delay_ms: float = Field(default=0, ge=0, le=10_000)


class MockOptions(BaseModel):
    """The per-request ``mock`` field."""

    model_config = ConfigDict(extra="forbid")

    scenario: Scenario | None = None
    token_delay_ms: float | None = Field(default=None, ge=0, le=10_000)


@dataclass(frozen=True)
class Prepared:
    """The request's options and, when it asks for structure, what and the instance."""

    options: MockOptions
    structure: Constraint | None = None
    instance: str = ""


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
        structure = constraint(request)
        if structure is None:
            return Prompt(tokens=tokens, data=Prepared(options))
        text = await anyio.to_thread.run_sync(answer_for, structure)
        return Prompt(tokens=tokens, data=Prepared(options, structure, text))

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
        prepared: Prepared = prompt.data
        options = prepared.options
        delay = (options.token_delay_ms or 0) / 1000
        text = last_user_text(request)
        if prepared.structure is not None:
            pieces = structured_pieces(prepared.structure, prepared.instance, request)
        elif options.scenario == "tool_call":
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


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return ("mock", MockSettings)


@hookimpl
def ddx_llm_backends() -> dict[str, Any]:
    return {"mock": lambda app: MockBackend(app.settings.section("mock"))}
