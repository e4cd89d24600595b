"""Anthropic ``stop_sequences``, matched on the answer text as it streams.

The core's deltas say that a generation stopped, not which stop string stopped it, and
Anthropic answers name it (``stop_reason: "stop_sequence"``, ``stop_sequence``).  So the surface
matches the sequences itself, on every backend alike: a piece of text is released only once no
sequence can still begin inside it, so a sequence split across pieces never leaks into the
answer, and the text before the earliest match is the answer's end.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text pieces; :meth:`feed` returns ``(text to release, matched sequence or None)``.

    After a match the matcher is done (the caller ends the answer).  :meth:`flush` returns what
    is still held when the answer ends without a match.  Without sequences every piece passes
    straight through.
    """

    def __init__(self, sequences: Sequence[str] | None) -> None:
        self.sequences = tuple(s for s in sequences or () if s)
        self.held = ""

    def feed(self, piece: str) -> tuple[str, str | None]:
        if not self.sequences:
            return piece, None
        text = self.held + piece
        found = [(text.find(s), s) for s in self.sequences]
        hits = [(index, s) for index, s in found if index >= 0]
        if hits:
            index, sequence = min(hits)  # earliest; for one start, the shortest
            self.held = ""
            return text[:index], sequence
        keep = held_suffix(text, self.sequences)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], None

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


def held_suffix(text: str, sequences: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins one of ``sequences``."""
    longest = 0
    for sequence in sequences:
        for size in range(min(len(sequence) - 1, len(text)), longest, -1):
            if sequence.startswith(text[len(text) - size :]):
                longest = size
                break
    return longest
