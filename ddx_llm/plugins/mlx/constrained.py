"""Constrained decoding of one sequence: an mlx-lm logits processor holding its grammar state.

:class:`GrammarProcessor` is one request's llguidance ``LLMatcher``, used as the last of the
sequence's logits processors in mlx-lm's ``BatchGenerator``, so constrained and free sequences
share a batch and each constrained one advances its own grammar.  At every decode step mlx-lm
calls it with the sequence's token context (prompt and generated tokens, the latest last) and
its ``(1, vocab)`` logits; it

1. feeds the token sampled at the step before to the matcher (not at the first call, whose
   context ends with the last prompt token);
2. starts the forward pass (``mx.async_eval``) so the model computes while the CPU computes the
   mask;
3. computes the allowed-token bitmask with llguidance's numpy helper
   (``fill_next_token_bitmask``) and sets every other logit to -inf with ``mx.where``.

``llguidance.mlx`` applies masks with a Metal kernel, which fails without Metal (``mlx[cpu]`` on
Linux); the bit unpacking and ``mx.where`` here run on any MLX device.

The end-of-turn tokens are the llguidance tokenizer's end tokens: allowed exactly when the
grammar accepts, so a complete answer ends there (a JSON object's closing brace is followed only
by the end of turn).  Once the matcher has consumed the end token it is stopped and the
processor passes logits through (mlx-lm may compute one more step before it drops the sequence).

A token the grammar refuses cannot be sampled, but should the matcher still enter an error
state, :attr:`error` is set and only the end tokens stay allowed: the engine then fails the
request rather than return text that escaped its grammar.

Runs in the MLX worker thread.  Dropping the processor (the sequence left the batch) frees the
grammar state.
"""

from __future__ import annotations

import time
from typing import Any


class GrammarProcessor:
    """One sequence's grammar state as an mlx-lm logits processor.

    Args:
        matcher: a fresh ``LLMatcher`` (nothing consumed yet), owned by this processor.
        vocab_size: the llguidance tokenizer's vocabulary size (the mask's length); logits
            wider than that (padded embeddings) are masked beyond it.
        end_tokens: the end-of-turn token ids (allowed alone after an error).
    """

    def __init__(self, matcher: Any, vocab_size: int, end_tokens: tuple[int, ...]) -> None:
        import llguidance.numpy as llnp

        self.matcher = matcher
        self.vocab_size = vocab_size
        self.end_tokens = end_tokens
        self.error: str | None = None
        self.masks = 0
        self.mask_seconds = 0.0
        """Time spent feeding tokens to the matcher and computing masks (not the wait for the
        sampled token, which decoding without a grammar waits for too)."""
        self._started = False
        self._words = llnp.allocate_token_bitmask(1, vocab_size)
        self._allowed: Any = None  # numpy bool buffer as wide as the logits

    def __call__(self, context: Any, logits: Any) -> Any:
        import mlx.core as mx

        if self.matcher.is_stopped():
            return logits
        mx.async_eval(logits)  # this step's forward pass runs while the mask is computed
        # the token sampled at the step before (waits for that step, as mlx-lm itself would)
        token = int(context[-1].item()) if self._started else None
        started = time.perf_counter()
        if token is not None:
            self._consume(token)
        self._started = True
        allowed = self._mask(logits.shape[-1])
        self.masks += 1
        self.mask_seconds += time.perf_counter() - started
        return mx.where(mx.array(allowed), logits, -mx.inf)

    def _consume(self, token: int) -> None:
        if self.error is None and not self.matcher.consume_token(token):
            self.error = self.matcher.get_error() or f"the grammar refused token {token}"

    def _mask(self, width: int) -> Any:
        """A bool numpy array of ``width``: the tokens the grammar allows next."""
        import llguidance.numpy as llnp
        import numpy as np

        if self._allowed is None or self._allowed.shape[0] != width:
            self._allowed = np.zeros(width, dtype=np.bool_)
        allowed = self._allowed
        if self.error is not None:
            allowed[:] = False
            allowed[list(self.end_tokens)] = True
            return allowed
        llnp.fill_next_token_bitmask(self.matcher, self._words)
        bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")
        count = min(width, self.vocab_size)
        allowed[:count] = bits[:count]
        allowed[count:] = False
        return allowed

    @property
    def mask_ms(self) -> float:
        """Mean time per mask, in milliseconds."""
        return 1000 * self.mask_seconds / self.masks if self.masks else 0.0
