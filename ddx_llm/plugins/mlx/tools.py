"""Tool calls in the generated text → OpenAI tool-call deltas.

The model's tokenizer (mlx-lm's ``TokenizerWrapper``) names the markers around a call
(``tool_call_start``/``tool_call_end``, e.g. ``<tool_call>``/``</tool_call>``) and the parser for
the text between them (``tool_parser``, one of ``mlx_lm.tool_parsers``).  :class:`ToolCallStream`
watches the text stream: text outside the markers passes through (a possible marker prefix is held
back), a complete call is parsed and validated, and becomes two deltas — the header with a fresh
``call_<hex>`` id and the function name, then the arguments as a JSON string.  A call that does
not parse, or lacks a name or object arguments, or is cut off, comes back as the original text:
never an exception, never a silently dropped call.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from ddx_llm.backend import ToolCallDelta
from ddx_llm.stop_strings import held_suffix

logger = logging.getLogger(__name__)

Output = str | ToolCallDelta
"""One item of the parsed stream, in order: text, or a tool-call piece."""


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def normalize_call(parsed: Any) -> list[tuple[str, str]] | None:
    """``[(name, arguments_json), ...]`` from a parser's result (a dict or a list of dicts), or
    None when it is not a well-formed call: the name must be a non-empty string and the
    arguments an object (or a string holding a JSON object)."""
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return None
        name, arguments = item.get("name"), item.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                return None
        if not isinstance(name, str) or not name or not isinstance(arguments, dict):
            return None
        calls.append((name, json.dumps(arguments, ensure_ascii=False)))
    return calls or None


class ToolCallStream:
    """Splits generated text into content and tool calls, incrementally.

    Args:
        start: the text that opens a call (``tokenizer.tool_call_start``).
        end: the text that closes it; empty for formats whose calls run to the end of the output.
        parse: ``parse(text_between_markers, tools)`` (``tokenizer.tool_parser``).
        tools: the request's tool definitions, passed to ``parse``.
        max_calls: stop after this many calls (``parallel_tool_calls: false`` is 1): what
            follows is discarded and :attr:`closed` turns true, so the caller can stop generating.
    """

    def __init__(
        self,
        start: str,
        end: str | None,
        parse: Callable[[str, Any], Any],
        tools: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
    ) -> None:
        self.start = start
        self.end = end or ""
        self.parse = parse
        self.tools = tools
        self.max_calls = max_calls
        self.calls = 0
        """Well-formed calls emitted so far."""
        self.closed = False
        self._buffer = ""
        self._in_call = False

    def feed(self, text: str) -> list[Output]:
        """Consume a piece of generated text; return what can be emitted now, in order."""
        if self.closed:
            return []
        self._buffer += text
        out: list[Output] = []
        while not self.closed:
            if not self._in_call:
                index = self._buffer.find(self.start)
                if index < 0:
                    keep = held_suffix(self._buffer, [self.start])
                    cut = len(self._buffer) - keep
                    _append_text(out, self._buffer[:cut])
                    self._buffer = self._buffer[cut:]
                    return out
                _append_text(out, self._buffer[:index])
                self._buffer = self._buffer[index + len(self.start) :]
                self._in_call = True
            else:
                index = self._buffer.find(self.end) if self.end else -1
                if index < 0:
                    return out
                body = self._buffer[:index]
                self._buffer = self._buffer[index + len(self.end) :]
                self._in_call = False
                out.extend(self._call(body, closed=True))
        self._buffer = ""
        return out

    def finish(self) -> list[Output]:
        """The generation ended: emit what is still buffered (an unterminated call as text,
        except for end-less formats, where the rest of the output is the call)."""
        body, self._buffer = self._buffer, ""
        if self.closed:
            return []
        if not self._in_call:
            return [body] if body else []
        self._in_call = False
        if not self.end:
            return self._call(body, closed=True)
        return self._call(body, closed=False)

    def _call(self, body: str, *, closed: bool) -> list[Output]:
        raw = self.start + body + (self.end if closed else "")
        if not closed:
            logger.info("tool call cut off before %r; returned as text", self.end)
            return [raw]
        try:
            calls = normalize_call(self.parse(body, self.tools))
        except Exception as exc:  # parsers are model-specific code: any failure is "not a call"
            logger.info(
                "tool call did not parse (%s: %s); returned as text", type(exc).__name__, exc
            )
            return [raw]
        if calls is None:
            logger.info("tool call without a name or object arguments; returned as text")
            return [raw]
        out: list[Output] = []
        for name, arguments in calls[: self._room()]:
            out.append(ToolCallDelta(self.calls, id=new_call_id(), name=name))
            out.append(ToolCallDelta(self.calls, arguments=arguments))
            self.calls += 1
        self.closed = self.max_calls is not None and self.calls >= self.max_calls
        return out

    def _room(self) -> int | None:
        return None if self.max_calls is None else self.max_calls - self.calls


def _append_text(out: list[Output], text: str) -> None:
    if not text:
        return
    if out and isinstance(out[-1], str):
        out[-1] += text
    else:
        out.append(text)
