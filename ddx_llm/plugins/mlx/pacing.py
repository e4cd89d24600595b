"""Prefill sized in time: how many prompt tokens the next scheduler step may process.

The worker can only drop a cancelled sequence (a client gone) or stop (an unload, a swap)
between two steps of mlx-lm's ``BatchGenerator``, and one step processes one prompt chunk for
every sequence being prefilled.  A fixed number of tokens is a very different time on an Apple
GPU (thousands of tokens/s) and on a small CPU (~10 tokens/s: 512 tokens of three prompts took
52 s there).  :class:`PrefillPacer` measures the worker's own prefill speed and picks the chunk
so that a step lasts about ``target`` seconds.

Measuring: the worker times every step and counts the prompt tokens it processed.  Steps with
no prompt tokens but generating sequences measure the decode part of a step (smoothed); a step
with prompt tokens charges its duration, minus that decode estimate when sequences were
generating, to its prompt tokens.  The speed is ``tokens / seconds`` of decayed sums, the past
losing half its weight per ``target`` seconds measured: it follows a prompt's growing attention
cost within a few steps, and a tiny step barely moves it.  The chunk per prefilling sequence
is::

    rate * max(target - decode, target / 4) / prefilling

clamped to ``[1, upper]`` (``upper`` is ``[mlx] prefill_step_size``); before the first
measurement a step processes ``initial`` tokens in all.  Per-step overhead is charged to the
tokens, so the estimate errs on the short side and converges to steps of about ``target``.
"""

from __future__ import annotations

from dataclasses import dataclass

DECAY = 0.5
"""Weight the past keeps per ``target`` seconds of new measurement (per step when ``target``
is 0)."""
INITIAL_TOKENS = 16
"""Prompt tokens of the first prefill step, shared by its sequences, before any measurement
(about 1 s on the slowest CPU measured, milliseconds on a GPU; the next step is sized from
it)."""
MIN_BUDGET = 0.25
"""Share of ``target`` left to prefill however long decoding takes, so prompts still move."""
MIN_PREFILL_SHARE = 0.1
"""A mixed step charges at least this share of its time to its prompt tokens."""


@dataclass
class PrefillPacer:
    """Chooses prompt tokens per sequence for the next step; ``target`` 0 means a fixed chunk
    of ``upper`` tokens (mlx-lm's own ``prefill_step_size`` behaviour).

    Not thread-safe: the worker thread calls it; other threads only read :meth:`status`.
    """

    target: float
    upper: int
    initial: int = INITIAL_TOKENS
    last_chunk: int = 0
    last_step_seconds: float = 0.0
    longest_step_seconds: float = 0.0
    _tokens: float = 0.0
    _seconds: float = 0.0
    _decode: float = 0.0

    @property
    def rate(self) -> float | None:
        """Smoothed prefill speed in prompt tokens per second (None before a measurement)."""
        return self._tokens / self._seconds if self._seconds > 0 else None

    def chunk(self, prefilling: int, generating: bool) -> int:
        """Tokens per sequence for the next step, with ``prefilling`` sequences in prompt
        processing and, when ``generating``, sequences decoding in the same step."""
        if self.target <= 0:
            tokens = self.upper
        elif (rate := self.rate) is None:
            tokens = self.initial // max(prefilling, 1)
        else:
            decode = self._decode if generating else 0.0
            budget = max(self.target - decode, self.target * MIN_BUDGET)
            tokens = int(rate * budget / max(prefilling, 1))
        self.last_chunk = max(1, min(self.upper, tokens))
        return self.last_chunk

    def observe(self, prompt_tokens: int, seconds: float, generating: bool) -> None:
        """Record one step: the prompt tokens it processed, its duration, and whether
        sequences were generating in it."""
        self.last_step_seconds = seconds
        self.longest_step_seconds = max(self.longest_step_seconds, seconds)
        if prompt_tokens <= 0:
            if generating:
                self._decode = DECAY * self._decode + (1 - DECAY) * seconds
            return
        prefill = seconds - self._decode if generating else seconds
        prefill = max(prefill, seconds * MIN_PREFILL_SHARE)
        if prefill > 0:
            keep = DECAY ** (prefill / self.target) if self.target > 0 else DECAY
            self._tokens = keep * self._tokens + prompt_tokens
            self._seconds = keep * self._seconds + prefill

    def status(self) -> dict[str, float | int | None]:
        """For ``/health``: the target, the measured speed, the last chunk and step, and the
        longest step so far."""
        rate = self.rate
        return {
            "prefill_step_seconds": self.target,
            "prefill_tokens_per_second": round(rate, 1) if rate is not None else None,
            "prefill_chunk": self.last_chunk,
            "last_step_seconds": round(self.last_step_seconds, 3),
            "longest_step_seconds": round(self.longest_step_seconds, 3),
        }
