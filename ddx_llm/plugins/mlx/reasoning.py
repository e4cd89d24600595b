"""A reasoning model's thinking, split from its answer.

Models that think before answering (Qwen3 thinking, DeepSeek-R1 distills) write their thoughts
between markers that mlx-lm knows from the tokenizer (``tokenizer.think_start`` /
``think_end``: ``<think>``…``</think>`` and the other families mlx-lm recognises).  The chat
template often opens the block in the prompt itself, so a sequence may *start* thinking:
:func:`starts_thinking` reads that from the rendered prompt.  :class:`ThinkSplitter` then sorts
the decoded text into ``("reasoning", text)`` and ``("content", text)`` pieces, the markers
dropped; a marker split across pieces is held back until it is whole (as stop strings are).
"""

from __future__ import annotations

from typing import Any

from ddx_llm.stop_strings import held_suffix

REASONING, CONTENT = "reasoning", "content"


def starts_thinking(tokenizer: Any, prompt: list[int]) -> bool:
    """Whether the rendered ``prompt`` leaves a thinking block open (the template opened it)."""
    if not getattr(tokenizer, "has_thinking", False):
        return False
    return tokenizer.rfind_think_start(prompt) > tokenizer.rfind_think_end(prompt)


class ThinkSplitter:
    """Feed decoded text; get ``[(kind, text), ...]`` with ``kind`` reasoning or content."""

    def __init__(self, start: str, end: str, *, thinking: bool) -> None:
        self.start = start
        self.end = end
        self.thinking = thinking
        self._held = ""

    def feed(self, piece: str) -> list[tuple[str, str]]:
        text, self._held = self._held + piece, ""
        out: list[tuple[str, str]] = []
        while text:
            marker = self.end if self.thinking else self.start
            kind = REASONING if self.thinking else CONTENT
            index = text.find(marker)
            if index >= 0:
                if index:
                    out.append((kind, text[:index]))
                text = text[index + len(marker) :]
                self.thinking = not self.thinking
                continue
            keep = held_suffix(text, [marker])
            if len(text) > keep:
                out.append((kind, text[: len(text) - keep]))
            self._held = text[len(text) - keep :]
            break
        return out

    def flush(self) -> list[tuple[str, str]]:
        """What is held back when the text ends (an unfinished marker is plain text)."""
        held, self._held = self._held, ""
        return [(REASONING if self.thinking else CONTENT, held)] if held else []
