"""Anthropic shaping: the core's :class:`~ddx_llm.backend.Delta` pieces → stream events, or the
one ``Message`` those events add up to.

:meth:`MessageShaper.events` yields ``message_start`` at once, then content blocks in order —
``thinking`` (from ``Delta.reasoning``), ``text`` (``Delta.content``, stop sequences matched
by :mod:`.stops`), ``tool_use`` (one block per tool call, its input as ``input_json_delta``
pieces) — each opened by ``content_block_start`` and closed by ``content_block_stop`` when the
next kind of output begins, then ``message_delta`` (stop reason, stop sequence, usage) and
``message_stop``.  :meth:`MessageShaper.collect` folds the same events into the ``Message``, as
the SDKs' stream accumulators do, so both answers always agree.

Stop reasons: the backend's ``stop`` is ``end_turn``, ``length`` ``max_tokens``, ``tool_calls``
``tool_use``; a stop sequence matched here ends the generation at once (``stop_sequence``; the
usage then comes from the core's ``RequestDone``, :mod:`.ended_usage`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from pydantic import BaseModel

from ddx_llm.backend import Delta, ToolCallDelta
from ddx_llm.errors import LlmError
from ddx_llm.stop_strings import StopMatcher

from .ended_usage import EndedUsage
from .message_schema import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    Message,
    MessageDelta,
    MessageDeltaBody,
    MessageDeltaUsage,
    MessageStart,
    MessageStop,
    StopReason,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)

STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
}


class MessageShaper:
    """Shapes one generation of ``model`` for the request ``request_id``; ``ended`` gives the
    usage of a generation ended by one of ``stop_sequences``."""

    def __init__(
        self,
        model: str,
        *,
        request_id: str,
        ended: EndedUsage,
        stop_sequences: list[str] | None = None,
    ) -> None:
        self.id = f"msg_{uuid.uuid4().hex}"
        self.model = model
        self.request_id = request_id
        self.ended = ended
        self.stop_sequences = stop_sequences

    async def events(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[BaseModel]:
        """The stream events of the generation; closes ``deltas`` when done or closed."""
        blocks = Blocks()
        matcher = StopMatcher(self.stop_sequences)
        generated = 0
        start = MessageStart(
            message=Message(
                id=self.id,
                model=self.model,
                content=[],
                usage=Usage(input_tokens=getattr(deltas, "prompt_tokens", 0), output_tokens=0),
            )
        )
        async with aclosing(deltas):  # entered first: closing the events closes the generation
            yield start
            async for delta in deltas:
                generated += delta.tokens
                if delta.reasoning:
                    for event in blocks.thinking(delta.reasoning):
                        yield event
                if delta.content:
                    text, matched = matcher.feed(delta.content)
                    if matched is not None:
                        usage = await self._end_early(deltas, generated)
                    for event in blocks.text(text) if text else ():
                        yield event
                    if matched is not None:
                        for event in self._end(blocks, "stop_sequence", usage, matched):
                            yield event
                        return
                for piece in delta.tool_calls:
                    for event in blocks.tool(piece):
                        yield event
                if delta.finish_reason:
                    held = matcher.flush()
                    for event in blocks.text(held) if held else ():
                        yield event
                    for event in self._end(blocks, _stop_reason(delta), _usage(delta)):
                        yield event
                    return
        raise LlmError("the backend ended the generation without a finish reason")

    async def _end_early(self, deltas: AsyncIterator[Delta], generated: int) -> MessageDeltaUsage:
        """Close the generation (a stop sequence matched); its usage from ``RequestDone``."""
        self.ended.expect(self.request_id)
        try:
            await deltas.aclose()  # type: ignore[attr-defined]
        finally:
            done = self.ended.take(self.request_id)
        prompt = done.prompt_tokens if done is not None else 0
        return MessageDeltaUsage(input_tokens=prompt, output_tokens=generated)

    def _end(
        self,
        blocks: Blocks,
        reason: StopReason,
        usage: MessageDeltaUsage,
        sequence: str | None = None,
    ) -> list[BaseModel]:
        body = MessageDeltaBody(stop_reason=reason, stop_sequence=sequence)
        return [*blocks.close(), MessageDelta(delta=body, usage=usage), MessageStop()]

    async def collect(self, deltas: AsyncIterator[Delta]) -> Message:
        """The whole generation as one ``Message``: :meth:`events` folded."""
        message: Message | None = None
        inputs: dict[int, str] = {}
        async with aclosing(self.events(deltas)) as events:
            async for event in events:
                if isinstance(event, MessageStart):
                    message = event.message.model_copy(deep=True)
                elif isinstance(event, ContentBlockStart):
                    message.content.append(event.content_block.model_copy(deep=True))
                elif isinstance(event, ContentBlockDelta):
                    _apply(message.content[event.index], event, inputs)
                elif isinstance(event, ContentBlockStop):
                    block = message.content[event.index]
                    if isinstance(block, ToolUseBlock):
                        block.input = _tool_input(inputs.pop(event.index, ""), block.name)
                elif isinstance(event, MessageDelta):
                    message.stop_reason = event.delta.stop_reason
                    message.stop_sequence = event.delta.stop_sequence
                    message.usage = Usage(**event.usage.model_dump())
        return message


class Blocks:
    """The content blocks of one answer: which one is open, the events that open, fill and
    close them.  A tool call's pieces must follow one another (the backends' own order)."""

    def __init__(self) -> None:
        self.index = -1
        self.open: tuple[str, int] | None = None
        self.calls: set[int] = set()

    def _switch(self, key: tuple[str, int], block: BaseModel) -> list[BaseModel]:
        if self.open == key:
            return []
        events = self.close()
        self.index += 1
        self.open = key
        events.append(ContentBlockStart(index=self.index, content_block=block))
        return events

    def text(self, text: str) -> list[BaseModel]:
        events = self._switch(("text", 0), TextBlock(text=""))
        return [*events, ContentBlockDelta(index=self.index, delta=TextDelta(text=text))]

    def thinking(self, text: str) -> list[BaseModel]:
        events = self._switch(("thinking", 0), ThinkingBlock(thinking=""))
        return [*events, ContentBlockDelta(index=self.index, delta=ThinkingDelta(thinking=text))]

    def tool(self, piece: ToolCallDelta) -> list[BaseModel]:
        key = ("tool", piece.index)
        events: list[BaseModel] = []
        if self.open != key:
            if piece.index in self.calls or not piece.id or not piece.name:
                raise LlmError(
                    "the backend interleaved tool calls or began one without its id and name"
                )
            self.calls.add(piece.index)
            events = self._switch(key, ToolUseBlock(id=piece.id, name=piece.name, input={}))
        if piece.arguments:
            delta = InputJsonDelta(partial_json=piece.arguments)
            events.append(ContentBlockDelta(index=self.index, delta=delta))
        return events

    def close(self) -> list[BaseModel]:
        if self.open is None:
            return []
        self.open = None
        return [ContentBlockStop(index=self.index)]


def _apply(block: BaseModel, event: ContentBlockDelta, inputs: dict[int, str]) -> None:
    delta = event.delta
    if isinstance(delta, TextDelta):
        block.text += delta.text
    elif isinstance(delta, ThinkingDelta):
        block.thinking += delta.thinking
    else:
        inputs[event.index] = inputs.get(event.index, "") + delta.partial_json


def _tool_input(text: str, name: str) -> dict:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise LlmError(f"the model's input for tool {name!r} is not a JSON object", detail=text)
    return value


def _stop_reason(delta: Delta) -> StopReason:
    reason = STOP_REASONS.get(delta.finish_reason or "")
    if reason is None:
        raise LlmError(f"the backend finished with an unknown reason {delta.finish_reason!r}")
    return reason


def _usage(delta: Delta) -> MessageDeltaUsage:
    if delta.usage is None:
        raise LlmError("the backend finished without usage counts")
    return MessageDeltaUsage(
        input_tokens=delta.usage.prompt_tokens, output_tokens=delta.usage.completion_tokens
    )
