"""Backend deltas → OpenAI's ``text_completion`` object, streamed or whole.

Streamed and whole answers have the same shape (OpenAI's ``CreateCompletionResponse``): one
choice with ``text``, ``logprobs`` (null unless asked for) and ``finish_reason`` (null until the
last chunk).  A stream sends one chunk per piece of text, the finishing chunk, and — with
``stream_options.include_usage`` — a last chunk with ``choices: []`` and ``usage``; a whole
answer carries ``usage``.  ``echo`` puts the prompt before the generated text (a stream sends it
first, as a chunk of its own).

Log probabilities come from the backend's per-token figures (the chat shape) and are restated
in the legacy shape: ``tokens``, ``token_logprobs``, ``top_logprobs`` (one ``{token: logprob}``
object per token) and ``text_offset`` (each token's character offset in the whole text, across
chunks).

A completion is text only: a backend that answers with a tool call or with reasoning (the
mock's ``tool_call`` and ``reasoning`` scenarios) gets 422 ``request_invalid`` (in-band, once a
stream has begun) rather than an answer that leaves part of it out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Literal

from pydantic import BaseModel, Field

from ddx_llm.backend import Delta
from ddx_llm.errors import LlmError, RequestInvalid
from ddx_llm.schemas import TokenLogprob, Usage

TEXT_ONLY = (
    "a text completion carries text only, and the backend answered with {what}; "
    'on the mock, choose the echo scenario ({{"mock": {{"scenario": "echo"}}}} or [mock] '
    "scenario)"
)


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None = None


class Completion(BaseModel):
    """OpenAI's ``text_completion`` object (a stream's chunks have the same shape)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(default=None, exclude_if=lambda value: value is None)


class CompletionShaper:
    """Shapes one generation as a completion.

    Args:
        model: the registry id that generated it.
        prompt: the prompt text, put before the answer when ``echo``.
        echo: whether to put the prompt before the answer.
        logprobs: whether log probabilities were asked for.
        include_usage: streams end with a usage chunk.
    """

    def __init__(
        self,
        model: str,
        *,
        prompt: str = "",
        echo: bool = False,
        logprobs: bool = False,
        include_usage: bool = False,
    ) -> None:
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.echoed = prompt if echo else ""
        self.logprobs = logprobs
        self.include_usage = include_usage
        self._offset = len(self.echoed)

    def _completion(self, choices: list[CompletionChoice], usage: Usage | None = None):
        return Completion(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def _choice(self, text: str, delta: Delta | None = None) -> CompletionChoice:
        logprobs = None
        if self.logprobs:
            logprobs = self._legacy(delta.logprobs if delta else None)
        return CompletionChoice(text=text, logprobs=logprobs)

    def _legacy(self, figures: list[TokenLogprob] | None) -> CompletionLogprobs:
        """The chat figures of some tokens in the legacy shape, offsets counted on."""
        out = CompletionLogprobs()
        for token in figures or []:
            out.tokens.append(token.token)
            out.token_logprobs.append(token.logprob)
            out.top_logprobs.append({alt.token: alt.logprob for alt in token.top_logprobs})
            out.text_offset.append(self._offset)
            self._offset += len(token.token)
        return out

    async def stream(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Completion]:
        """Chunks: the echoed prompt, one chunk a piece of text, the finishing chunk, then the
        usage chunk when asked.  Closes ``deltas`` when done or closed."""
        async with aclosing(deltas):
            if self.echoed:
                yield self._completion([self._choice(self.echoed)])
            async for delta in deltas:
                text_only(delta)
                if delta.content or (self.logprobs and delta.logprobs):
                    yield self._completion([self._choice(delta.content or "", delta)])
                if delta.finish_reason:
                    last = self._choice("")
                    last.finish_reason = finish(delta)
                    yield self._completion([last])
                    if self.include_usage:
                        yield self._completion([], usage=usage(delta))
                    return
        raise LlmError("the backend ended the generation without a finish reason")

    async def collect(self, deltas: AsyncIterator[Delta]) -> Completion:
        """The whole generation as one completion (with ``usage``)."""
        pieces = [self.echoed]
        figures: list[TokenLogprob] = []
        async with aclosing(deltas):
            async for delta in deltas:
                text_only(delta)
                pieces.append(delta.content or "")
                figures.extend(delta.logprobs or [])
                if delta.finish_reason:
                    choice = CompletionChoice(
                        text="".join(pieces),
                        logprobs=self._legacy(figures) if self.logprobs else None,
                        finish_reason=finish(delta),
                    )
                    return self._completion([choice], usage=usage(delta))
        raise LlmError("the backend ended the generation without a finish reason")


def text_only(delta: Delta) -> None:
    """Raise the 422 for a piece a text completion cannot carry."""
    if delta.tool_calls or delta.finish_reason == "tool_calls":
        raise RequestInvalid(TEXT_ONLY.format(what="a tool call"))
    if delta.reasoning:
        raise RequestInvalid(TEXT_ONLY.format(what="reasoning"))


def finish(delta: Delta) -> Literal["stop", "length"]:
    if delta.finish_reason in ("stop", "length"):
        return delta.finish_reason  # type: ignore[return-value]
    raise LlmError(f"the backend finished with {delta.finish_reason!r}, not stop or length")


def usage(delta: Delta) -> Usage:
    if delta.usage is None:
        raise LlmError("the backend finished without usage counts")
    counts = delta.usage
    return Usage(
        prompt_tokens=counts.prompt_tokens,
        completion_tokens=counts.completion_tokens,
        total_tokens=counts.total_tokens,
    )
