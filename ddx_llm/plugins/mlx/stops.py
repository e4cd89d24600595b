"""Stop strings, matched on the decoded text stream.

mlx-lm 0.32 has no stop-string support that both strips the string and ends the generation: its
token-level automaton misses stops that merge with neighbouring text into other tokens (" STOP"
is one token, "STOP" two), and its text state machine strips without stopping.  So the text is
matched here, after detokenization: a piece is released only when no stop string can still begin
inside it, which keeps a stop split across tokens (or chunks) out of the output.
"""

from __future__ import annotations

from collections.abc import Iterable


def held_suffix(text: str, needles: Iterable[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``needles``
    (the part that must be held back because a needle may still complete there)."""
    longest = 0
    for needle in needles:
        for size in range(min(len(needle) - 1, len(text)), longest, -1):
            if text.endswith(needle[:size]):
                longest = size
                break
    return longest


class StopMatcher:
    """Feeds on decoded text pieces; releases text that cannot be part of a stop string.

    ``feed`` returns ``(text, stopped)``: the text now safe to emit and whether a stop string
    was completed (the text is then everything before the earliest stop, and the generation
    must end).  ``flush`` releases what was held back when the generation ends otherwise.
    With no stop strings every piece passes straight through.
    """

    def __init__(self, stops: Iterable[str] = ()) -> None:
        self.stops = tuple(stop for stop in stops if stop)
        self._held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        if not self.stops:
            return piece, False
        text = self._held + piece
        found = [index for index in (text.find(stop) for stop in self.stops) if index >= 0]
        if found:
            self._held = ""
            return text[: min(found)], True
        keep = held_suffix(text, self.stops)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
