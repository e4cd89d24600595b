"""OpenAI shaping: backend :class:`~ddx_llm.backend.Delta` pieces → chunks or one completion.

Backends never build OpenAI bodies; this module is the one place that does, so every backend
streams and answers in exactly the same (schema-valid) shape.

Chunks come a token at a time, so :meth:`CompletionShaper.stream` (given ``encoded``) writes
the common ones — a piece of text, the finish — straight to JSON bytes around a prefix made once per
stream (the id, ``created``, the model): the same bytes the pydantic models give (tested), for
one ``json.dumps`` of the text instead of three models and their serializer.  Anything else (tool
calls, reasoning, log probabilities, usage) goes through the models.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from json.encoder import encode_basestring  # type: ignore[attr-defined]

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
        self.id = f"chatcmpl-{os.urandom(16).hex()}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.logprobs = logprobs

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    async def stream(
        self, deltas: AsyncIterator[Delta], *, encoded: bytes | None = None
    ) -> AsyncIterator[ChatCompletionChunk | bytes]:
        """Chunks: the role with the first piece, one chunk a piece, the finish chunk, then the
        usage chunk when asked.  Closes ``deltas`` when done or closed.  With ``encoded`` (the
        JSON prefix of every chunk of this stream), plain text pieces and the finish come as
        JSON bytes instead of models."""
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
                    if encoded is not None and not delta.tool_calls and delta.reasoning is None:
                        yield encoded + _plain_piece(delta.content, first)
                    else:
                        yield self._chunk([self._piece(delta, first)])
                    first = False
                if delta.finish_reason:
                    if encoded is not None and delta.finish_reason in FINISH_REASONS:
                        yield encoded + FINISH[delta.finish_reason]
                    else:
                        yield self._chunk(
                            [ChunkChoice(delta=ChunkDelta(), finish_reason=delta.finish_reason)]
                        )
                    if self.include_usage:
                        yield self._chunk([], usage=_usage(delta))
                    return
        raise LlmError("the backend ended the generation without a finish reason")

    def chunk_prefix(self) -> bytes | None:
        """What every chunk's JSON of this stream starts with (the id, ``created``, the model,
        up to the choices), for :meth:`stream`'s ``encoded``; None when the chunks carry log
        probabilities (those go through the models)."""
        if self.logprobs:
            return None
        return (
            '{"id":' + _text(self.id) + ',"object":"chat.completion.chunk","created":'
            + str(self.created) + ',"model":' + _text(self.model) + ',"choices":['
        ).encode()  # fmt: skip

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


FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")
"""What ``ChunkChoice.finish_reason`` accepts; another value goes through the model (and fails
there, as it always did)."""
FINISH = {
    reason: ('{"index":0,"delta":{},"finish_reason":"' + reason + '"}]}').encode()
    for reason in FINISH_REASONS
}
ROLE = b'"role":"assistant"'


_text = encode_basestring
"""A JSON string as pydantic writes it: UTF-8 kept, the escapes of ``json.dumps(...,
ensure_ascii=False)`` (whose string encoder this is, without a new encoder per call)."""


def _plain_piece(content: str | None, first: bool) -> bytes:
    """The rest of a chunk after the prefix: one choice whose delta has the role (first
    piece) and the text; ``content`` is ``""`` on a first piece that has none, as in
    :meth:`CompletionShaper._piece`."""
    if first and content is None:
        content = ""
    fields = [ROLE] if first else []
    if content is not None:
        fields.append(b'"content":' + _text(content).encode())
    return b'{"index":0,"delta":{' + b",".join(fields) + b'},"finish_reason":null}]}'
