"""Backend deltas → the Responses event sequence, and the Response object it describes.

:class:`ResponseRun` is the one place that turns a generation into Responses output; a streamed
answer sends its events, a non-streamed one keeps only the final response, so both are the same
data.  The sequence, with ``sequence_number`` 0, 1, 2, …:

- ``response.created``, ``response.in_progress`` (the response, ``in_progress``, no output);
- per output item, in order: ``response.output_item.added``, then
  - a ``message``: ``response.content_part.added``, ``response.output_text.delta`` …,
    ``response.output_text.done``, ``response.content_part.done``;
  - a ``reasoning`` item (a reasoning model's thinking, from ``Delta.reasoning``; its text is
    the item's ``content``, ``reasoning_text`` — the raw thinking, not a ``summary``): the same
    with ``response.reasoning_text.delta`` / ``.done``;
  - a ``function_call``: ``response.function_call_arguments.delta`` …, ``.done``;
  and ``response.output_item.done``;
- last, ``response.completed`` — or ``response.incomplete`` (the output limit was reached:
  ``incomplete_details.reason`` ``max_output_tokens``) or ``response.failed`` (the generation
  failed mid-way: ``error``).  An item still open then is done with status ``incomplete``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from ddx_llm.backend import Delta, ToolCallDelta
from ddx_llm.errors import LlmError

from .items import new_id
from .shaping import logprobs, response_error, usage

Event = dict[str, Any]


@dataclass
class OpenItem:
    """The output item being written: its place in ``output``, the item itself, and the pieces
    of its text (or arguments) so far — joined into the item when it is done, not at every
    piece (no snapshot of the response is taken while an item is open)."""

    index: int
    item: dict[str, Any]
    pieces: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class ResponseRun:
    """One response being generated.  Feed it every delta (:meth:`feed`), or :meth:`fail` it;
    then :meth:`final_event`.  :attr:`response` is the Response object throughout."""

    def __init__(self, response: dict[str, Any], *, want_logprobs: bool = False) -> None:
        self.response = response
        self.want_logprobs = want_logprobs
        self.sequence = 0
        self.current: OpenItem | None = None
        self.calls: dict[int, OpenItem] = {}
        self.reasoning_tokens = 0
        self.finished = False

    # ------------------------------------------------------------------ events

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _at(self, item: OpenItem, **fields: Any) -> dict[str, Any]:
        return {"item_id": item.item["id"], "output_index": item.index, **fields}

    def start(self) -> list[Event]:
        """``response.created`` and ``response.in_progress``."""
        return [
            self._event("response.created", response=copy.deepcopy(self.response)),
            self._event("response.in_progress", response=copy.deepcopy(self.response)),
        ]

    def feed(self, delta: Delta) -> list[Event]:
        """The events of one delta; the last delta (``finish_reason``) closes the response."""
        if self.finished:
            raise LlmError("the backend went on after its finish reason")
        events: list[Event] = []
        if delta.reasoning:
            events += self._reasoning(delta.reasoning)
            if not delta.content and not delta.tool_calls:
                self.reasoning_tokens += delta.tokens
        if delta.content:
            events += self._text(delta.content, delta.logprobs)
        for piece in delta.tool_calls:
            events += self._call(piece)
        if delta.finish_reason:
            events += self._finish(delta)
        return events

    def fail(self, code: str, message: str) -> list[Event]:
        """The generation failed: close the open item (``incomplete``), mark the response
        ``failed`` with ``error``."""
        events = self._close("incomplete")
        self.finished = True
        self.response.update(status="failed", error=response_error(code, message))
        return events

    def final_event(self) -> Event:
        """``response.completed``, ``response.incomplete`` or ``response.failed``."""
        kind = {"completed": "completed", "incomplete": "incomplete"}.get(
            self.response["status"], "failed"
        )
        return self._event(f"response.{kind}", response=copy.deepcopy(self.response))

    # ------------------------------------------------------------------ items

    def _open(self, item: dict[str, Any]) -> tuple[OpenItem, list[Event]]:
        events = self._close("completed")
        output = self.response["output"]
        output.append(item)
        self.current = OpenItem(len(output) - 1, item)
        added = self._event(
            "response.output_item.added", output_index=self.current.index, item=copy.deepcopy(item)
        )
        return self.current, [*events, added]

    def _part(self, opened: OpenItem, part: dict[str, Any]) -> Event:
        opened.item["content"].append(part)
        return self._event(
            "response.content_part.added", **self._at(opened, content_index=0), part=dict(part)
        )

    def _text(self, text: str, tokens: Any) -> list[Event]:
        events: list[Event] = []
        opened = self.current
        if opened is None or opened.item["type"] != "message":
            item = {
                "id": new_id("message"),
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            opened, events = self._open(item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(self._part(opened, part))
        pieces = logprobs(tokens) if self.want_logprobs else []
        opened.pieces.append(text)
        opened.logprobs += pieces
        at = self._at(opened, content_index=0)
        events.append(self._event("response.output_text.delta", **at, delta=text, logprobs=pieces))
        return events

    def _reasoning(self, text: str) -> list[Event]:
        events: list[Event] = []
        opened = self.current
        if opened is None or opened.item["type"] != "reasoning":
            item = {
                "id": new_id("reasoning"),
                "type": "reasoning",
                "summary": [],
                "content": [],
                "status": "in_progress",
            }
            opened, events = self._open(item)
            events.append(self._part(opened, {"type": "reasoning_text", "text": ""}))
        opened.pieces.append(text)
        at = self._at(opened, content_index=0)
        events.append(self._event("response.reasoning_text.delta", **at, delta=text))
        return events

    def _call(self, piece: ToolCallDelta) -> list[Event]:
        events: list[Event] = []
        opened = self.calls.get(piece.index)
        if opened is None:
            if not piece.id or not piece.name:
                raise LlmError("the backend sent a tool-call piece before the call's id and name")
            item = {
                "id": new_id("function_call"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": piece.id,
                "name": piece.name,
                "arguments": "",
            }
            opened, events = self._open(item)
            self.calls[piece.index] = opened
        elif opened is not self.current:
            raise LlmError("the backend interleaved the pieces of two tool calls")
        if piece.arguments:
            opened.pieces.append(piece.arguments)
            at = self._at(opened)
            delta = piece.arguments
            events.append(self._event("response.function_call_arguments.delta", **at, delta=delta))
        return events

    def _close(self, status: str) -> list[Event]:
        """The ``*.done`` events of the open item, which gets ``status``."""
        opened, self.current = self.current, None
        if opened is None:
            return []
        item, at = opened.item, self._at(opened)
        item["status"] = status
        if item["type"] == "function_call":
            item["arguments"] = opened.text
            done = {"name": item["name"], "arguments": item["arguments"]}
            events = [self._event("response.function_call_arguments.done", **at, **done)]
        else:
            part = item["content"][0]
            part["text"] = opened.text
            kind = "output_text" if item["type"] == "message" else "reasoning_text"
            done = {"text": part["text"]}
            if item["type"] == "message":
                part["logprobs"] = done["logprobs"] = opened.logprobs
            events = [
                self._event(f"response.{kind}.done", **at, content_index=0, **done),
                self._event(
                    "response.content_part.done", **at, content_index=0, part=copy.deepcopy(part)
                ),
            ]
        item_done = self._event(
            "response.output_item.done", output_index=opened.index, item=copy.deepcopy(item)
        )
        return [*events, item_done]

    def _finish(self, last: Delta) -> list[Event]:
        incomplete = last.finish_reason == "length"
        events = self._close("incomplete" if incomplete else "completed")
        self.finished = True
        self.response["usage"] = usage(last, self.reasoning_tokens)
        if incomplete:
            self.response.update(
                status="incomplete", incomplete_details={"reason": "max_output_tokens"}
            )
        else:
            self.response.update(status="completed", completed_at=int(time.time()))
        return events
