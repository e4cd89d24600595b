"""OpenAI shaping: backend :class:`~ddx_llm.backend.Delta` pieces → chunks or one completion.

Backends never build OpenAI bodies; this module is the one place that does, so every backend
streams and answers in exactly the same (schema-valid) shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from ..backend import Delta
from ..errors import LlmError
from ..schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    FunctionCall,
    FunctionCallDelta,
    ResponseMessage,
    ToolCall,
    ToolCallChunk,
    Usage,
)


class CompletionShaper:
    """Shapes one generation.  ``include_usage`` adds the final ``choices: []`` usage chunk;
    ``logprobs`` attaches token log probabilities."""

    def __init__(self, model: str, *, include_usage: bool = False, logprobs: bool = False) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.logprobs = logprobs

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    async def stream(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks: the role with the first piece, one chunk a piece, the finish chunk, then the
        usage chunk when asked.  Closes ``deltas`` when done or closed."""
        first = True
        async with aclosing(deltas):
            async for delta in deltas:
                if (
                    delta.content is not None
                    or delta.reasoning is not None
                    or delta.tool_calls
                    or delta.logprobs
                    or (first and delta.finish_reason)
                ):
                    yield self._chunk([self._piece(delta, first)])
                    first = False
                if delta.finish_reason:
                    yield self._chunk(
                        [ChunkChoice(delta=ChunkDelta(), finish_reason=delta.finish_reason)]
                    )
                    if self.include_usage:
                        yield self._chunk([], usage=_usage(delta))
                    return
        raise LlmError("the backend ended the generation without a finish reason")

    def _piece(self, delta: Delta, first: bool) -> ChunkChoice:
        tool_calls = [
            ToolCallChunk(
                index=call.index,
                id=call.id,
                type="function" if call.id else None,
                function=FunctionCallDelta(name=call.name, arguments=call.arguments),
            )
            for call in delta.tool_calls
        ]
        content = delta.content
        if first and content is None and not tool_calls and delta.reasoning is None:
            content = ""
        return ChunkChoice(
            delta=ChunkDelta(
                role="assistant" if first else None,
                content=content,
                tool_calls=tool_calls or None,
                reasoning_content=delta.reasoning,
                reasoning=delta.reasoning,
            ),
            logprobs=ChoiceLogprobs(content=delta.logprobs) if self.logprobs else None,
        )

    async def collect(self, deltas: AsyncIterator[Delta]) -> ChatCompletion:
        """The whole generation as one ``chat.completion``."""
        text: list[str] = []
        thinking: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        logprobs = []
        async with aclosing(deltas):
            async for delta in deltas:
                if delta.content is not None:
                    text.append(delta.content)
                if delta.reasoning is not None:
                    thinking.append(delta.reasoning)
                for piece in delta.tool_calls:
                    call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = piece.id or call["id"]
                    call["name"] = piece.name or call["name"]
                    call["arguments"] += piece.arguments
                logprobs.extend(delta.logprobs or [])
                if delta.finish_reason:
                    return self._completion(delta, text, calls, logprobs, thinking)
        raise LlmError("the backend ended the generation without a finish reason")

    def _completion(
        self, last: Delta, text: list[str], calls: dict, logprobs: list, thinking: list[str]
    ) -> ChatCompletion:
        tool_calls = [
            ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"]))
            for _, c in sorted(calls.items())
        ]
        reasoning = "".join(thinking) if thinking else None
        message = ResponseMessage(
            content="".join(text) if text or not tool_calls else None,
            tool_calls=tool_calls or None,
            reasoning_content=reasoning,
            reasoning=reasoning,
        )
        choice = Choice(
            message=message,
            finish_reason=last.finish_reason,
            logprobs=ChoiceLogprobs(content=logprobs) if self.logprobs else None,
        )
        return ChatCompletion(
            id=self.id, created=self.created, model=self.model, choices=[choice], usage=_usage(last)
        )


def _usage(delta: Delta) -> Usage:
    if delta.usage is None:
        raise LlmError("the backend finished without usage counts")
    return Usage(
        prompt_tokens=delta.usage.prompt_tokens,
        completion_tokens=delta.usage.completion_tokens,
        total_tokens=delta.usage.total_tokens,
    )
