"""One request's sequence inside the batch: its tokens → text pieces, stop strings, logprobs.

Each sequence has its own streaming detokenizer (a copy per request: mlx-lm's detokenizers are
stateful), its own :class:`~ddx_llm.stop_strings.StopMatcher` and its own counts, so sequences
sharing a batch never see each other's text.  Runs in the MLX worker thread (logprob arrays
belong to it).

A constrained sequence also holds its :class:`~.constrained.GrammarProcessor`: should the grammar
have failed (it never should), :meth:`Sequence.outcome` turns the ending into an error rather
than return text that escaped its grammar.

End-of-turn handling follows ``mlx_lm.stream_generate``: the end token is counted but not
detokenized and has no logprob; ``finalize()`` releases text the detokenizer still held.
"""

from __future__ import annotations

from typing import Any

from ddx_llm.errors import LlmError
from ddx_llm.stop_strings import StopMatcher

from .jobs import Failed, Finished, Job, Piece
from .logprobs import TokenTexts, token_logprob


class Sequence:
    """The state of one job while it is in the batch.

    Args:
        job: the request.
        detokenizer: a fresh streaming detokenizer (``tokenizer.detokenizer`` gives a copy).
        texts: the worker's shared token-text cache (for logprob entries).
        cached_tokens: prompt tokens served from the prompt cache (not processed again).
        grammar: the sequence's grammar state (structured output), or None.
    """

    def __init__(
        self,
        job: Job,
        detokenizer: Any,
        texts: TokenTexts,
        cached_tokens: int,
        grammar: Any = None,
    ) -> None:
        self.job = job
        self.grammar = grammar
        self.detokenizer = detokenizer
        self.texts = texts
        self.cached_tokens = cached_tokens
        self.matcher = StopMatcher(job.params.stops)
        self.generated = 0
        self.prefilling = True
        """Until mlx-lm reports the end of its prompt: the sequence still costs prefill work."""
        self.prompt_done = 0
        """Prompt tokens processed so far (those served from the prompt cache not counted)."""

    def feed(self, token: int, logprobs: Any, finish_reason: str | None) -> Finished | None:
        """Post the piece for one generated ``token``; return the final event when the
        sequence is over (mlx-lm's ``finish_reason``, or a stop string completed), else None.

        The caller posts the returned event after taking the sequence out of the batch (so a
        client that sees it sees the worker's counters up to date).
        """
        params = self.job.params
        self.generated += 1
        end_of_turn = finish_reason == "stop"  # the end token: no text, no logprob
        entries = None
        if params.logprobs and not end_of_turn:
            entries = [token_logprob(logprobs, token, params.top_logprobs, self.texts)]
        if not end_of_turn:
            self.detokenizer.add_token(token)
        if finish_reason:
            self.detokenizer.finalize()
        text, stopped = self.matcher.feed(self.detokenizer.last_segment)
        if stopped:
            self.job.post(Piece(text, 1, entries))
            return self.finished("stop")
        if finish_reason:
            text += self.matcher.flush()
        self.job.post(Piece(text, 1, entries))
        return self.finished(finish_reason) if finish_reason else None

    def outcome(self, final: Finished) -> Finished | Failed:
        """``final``, or a failure when the sequence's grammar broke on the way."""
        error = self.grammar.error if self.grammar is not None else None
        if error is None or final.reason == "cancelled":
            return final
        return Failed(LlmError("constrained decoding failed", detail=error))

    def finished(self, reason: str) -> Finished:
        return Finished(reason, len(self.job.tokens), self.generated, self.cached_tokens)
