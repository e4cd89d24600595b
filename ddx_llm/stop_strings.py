"""Stop strings matched on streamed text: what a backend or an API surface may release.

A piece of text is released only once no stop string can still begin inside it, so a stop
split across pieces (tokens, chunks) never leaks into the output, and the text before the
earliest match is the output's end.  Used where text is matched after detokenization (the mlx
backend: mlx-lm's own stop handling either misses stops that merge with neighbouring text into
other tokens or strips without stopping) and by surfaces whose API names the sequence that
stopped (Anthropic's ``stop_sequence``).
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
    """Feed text pieces; :meth:`feed` returns ``(text to release, matched stop or None)``.

    After a match the caller ends the output (the text released is everything before the
    earliest stop; for two starting at once, the shorter).  :meth:`flush` releases what was
    held back when the output ends otherwise.  Without stop strings every piece passes
    straight through.
    """

    def __init__(self, stops: Iterable[str] | None = ()) -> None:
        self.stops = tuple(stop for stop in stops or () if stop)
        self._held = ""

    def feed(self, piece: str) -> tuple[str, str | None]:
        if not self.stops:
            return piece, None
        text = self._held + piece
        hits = [(index, stop) for stop in self.stops if (index := text.find(stop)) >= 0]
        if hits:
            index, stop = min(hits, key=lambda hit: (hit[0], len(hit[1])))
            self._held = ""
            return text[:index], stop
        keep = held_suffix(text, self.stops)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], None

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
