"""Continuous batching: every running request is one sequence of mlx-lm's ``BatchGenerator``.

The worker thread calls :meth:`BatchEngine.admit` for each new job and :meth:`BatchEngine.step`
in a loop.  One step is one scheduler tick of ``BatchGenerator.next()``: a decode step for every
generating sequence, and one prompt chunk for sequences still being prefilled — so a new request
joins without stopping the others (mlx-lm's server does the same).  The chunk is sized in time,
not tokens: before each step the :class:`~.pacing.PrefillPacer` sets the generator's
``prefill_step_size`` from the prefill speed it measured on the steps before, so a step lasts
about ``[mlx] prefill_step_seconds`` (``prefill_step_size`` is the upper bound), and a cancel
or a stop never waits for more than about one such step.

Each sequence brings its own sampler (seeded ones included), logits processors (bias,
penalties, and for structured output its own grammar state — a
:class:`~.constrained.GrammarProcessor`, always last — so constrained and free sequences share
the batch), token limit and end-of-turn stop tokens; stop strings, detokenizing and logprobs are
per :class:`~.sequence.Sequence`.  A cancelled job (client gone, or the one tool call asked for
made) is removed with ``BatchGenerator.remove``, which leaves the other sequences untouched.

Before admission, the prompt is looked up in the :class:`~.prompt_cache.PromptCache`; a hit
starts the sequence from a copy of the cached KV state and only the rest of the prompt is
processed.  A sequence that ends by itself (end of turn, length, stop string, tool call) stores
its KV cache back, keyed by exactly the tokens it holds, for the next turn.

Everything here runs in the MLX worker thread.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any

from ddx_llm.errors import ModelUnavailable

from .jobs import Failed, Finished, Job
from .logprobs import TokenTexts
from .pacing import PrefillPacer
from .prompt_cache import PromptCache
from .sampling import build_processors, build_sampler
from .sequence import Sequence

logger = logging.getLogger(__name__)


class BatchEngine:
    """The sequences of one model, batched.

    Args:
        model, tokenizer: from ``mlx_lm.load`` (on this thread).
        stream: the MLX stream of the worker thread.
        max_batch: sequences decoded together (``completion_batch_size``) and prefilled
            together (``prefill_batch_size``); more wait inside the generator.
        prefill_step_size: the most prompt tokens per sequence per step.
        prefill_step_seconds: the duration a step aims at (0: always ``prefill_step_size``).
        prompt_cache: where finished sequences leave their KV caches.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        stream: Any,
        max_batch: int,
        prefill_step_size: int,
        prefill_step_seconds: float = 0.0,
        prompt_cache: PromptCache,
    ) -> None:
        from mlx_lm.generate import StopSequences

        self.model = model
        self.tokenizer = tokenizer
        self.stream = stream
        self.max_batch = max_batch
        self.prefill_step_size = prefill_step_size
        self.prompt_cache = prompt_cache
        self.texts = TokenTexts(tokenizer)
        self.end_of_turn = StopSequences([[token] for token in tokenizer.eos_token_ids])
        self.sequences: dict[int, Sequence] = {}
        self.tokens_generated = 0
        self.requests_done = 0
        self.prompt_tokens_processed = 0
        self.grammar_states: weakref.WeakSet[Any] = weakref.WeakSet()
        """Live grammar states: a sequence's goes when it leaves the batch (freed, not kept)."""
        self.constrained_done = 0
        self.masks = 0
        self.mask_seconds = 0.0
        self.pacer = PrefillPacer(prefill_step_seconds, prefill_step_size)
        self._generator = self._new_generator()

    def _new_generator(self) -> Any:
        from mlx_lm.generate import BatchGenerator

        return BatchGenerator(
            self.model,
            completion_batch_size=self.max_batch,
            prefill_batch_size=self.max_batch,
            prefill_step_size=self.prefill_step_size,
            stream=self.stream,
        )

    @property
    def active(self) -> int:
        """Sequences in the batch (queued inside it, prefilling or generating)."""
        return len(self.sequences)

    def admit(self, job: Job) -> None:
        """Add ``job`` to the batch (a job cancelled while queued ends at once, unprocessed)."""
        if job.cancel.is_set():
            self._end(job, Finished("cancelled", len(job.tokens), 0))
            return
        params = job.params
        try:
            processors = build_processors(params)
            grammar = job.grammar.processor() if job.grammar is not None else None
            if grammar is not None:
                processors.append(grammar)  # last: nothing after it may unmask a token
            cache, rest = self.prompt_cache.fetch(job.tokens)
            cached = len(job.tokens) - len(rest)
            (uid,) = self._generator.insert(
                [rest],
                max_tokens=[params.max_tokens],
                caches=[cache] if cache is not None else None,
                all_tokens=[list(job.tokens[:cached])],
                samplers=[build_sampler(params)],
                logits_processors=[processors],
                stop_sequences=[self.end_of_turn],
            )
        except Exception as exc:  # e.g. a prompt mlx-lm refuses: this job only
            logger.exception("could not start a generation")
            self._end(job, Failed(exc))
            return
        self.prompt_tokens_processed += len(rest)
        self.sequences[uid] = Sequence(job, self.tokenizer.detokenizer, self.texts, cached, grammar)
        if grammar is not None:
            self.grammar_states.add(grammar)

    def step(self) -> None:
        """Drop cancelled sequences, then run one scheduler tick and hand out its tokens."""
        cancelled = [uid for uid, seq in self.sequences.items() if seq.job.cancel.is_set()]
        if cancelled:
            self._generator.remove(cancelled)
            for uid in cancelled:
                self._close(uid, self.sequences[uid].finished("cancelled"))
        if not self.sequences:
            return
        prefilling = sum(1 for sequence in self.sequences.values() if sequence.prefilling)
        generating = prefilling < len(self.sequences)
        if prefilling:
            chunk = self.pacer.chunk(min(prefilling, self.max_batch), generating)
            self._generator.prefill_step_size = chunk  # read by BatchGenerator.next()
        started = time.perf_counter()
        prompt_progress, generated = self._generator.next()
        processed = self._count_prefill(prompt_progress)
        self.pacer.observe(processed, time.perf_counter() - started, generating)
        stopped: list[tuple[int, Finished]] = []
        for response in generated:
            sequence = self.sequences.get(response.uid)
            if sequence is None:
                continue
            sequence.prefilling = False
            self.tokens_generated += 1
            final = sequence.feed(response.token, response.logprobs, response.finish_reason)
            if final is None:
                continue
            if response.finish_reason is not None:  # mlx-lm ended it and took it out
                self.prompt_cache.store(response.all_tokens, response.prompt_cache)
                self._close(response.uid, final)
            else:  # a stop string: still in the batch
                stopped.append((response.uid, final))
        if stopped:
            caches = self._generator.remove([uid for uid, _ in stopped], return_prompt_caches=True)
            for uid, final in stopped:
                cache, tokens = caches.get(uid, (None, None))
                if cache is not None:
                    self.prompt_cache.store(tokens, cache)
                self._close(uid, final)

    def _count_prefill(self, prompt_progress: list[Any]) -> int:
        """Prompt tokens the last step processed, from mlx-lm's progress reports
        (``progress[0]`` counts a sequence's processed prompt tokens); marks the sequences
        whose prompt is done."""
        processed = 0
        for response in prompt_progress:
            sequence = self.sequences.get(response.uid)
            if sequence is None:
                continue
            if response.end_of_prompt:
                sequence.prefilling = False
                continue
            done = int(response.progress[0])
            processed += max(0, done - sequence.prompt_done)
            sequence.prompt_done = done
        return processed

    def fail_all(self, error: BaseException) -> None:
        """End every sequence with ``error`` and start a fresh generator (after a failed step,
        the old one's batch state cannot be trusted)."""
        for sequence in self.sequences.values():
            self._end(sequence.job, Failed(error))
        self.sequences.clear()
        self._generator.close()
        self._generator = self._new_generator()

    def close(self, reason: str = "the model was unloaded") -> None:
        """Fail what is left, release the generator (it restores Metal's wired limit) and drop
        every array this engine holds."""
        for sequence in self.sequences.values():
            self._end(sequence.job, Failed(ModelUnavailable(reason, retry_after=1)))
        self.sequences.clear()
        self._generator.close()
        self._generator = None
        self.prompt_cache.clear()
        self.model = None

    def _close(self, uid: int, final: Finished) -> None:
        """Take the sequence out (its grammar state goes with it) and post its outcome."""
        sequence = self.sequences.pop(uid)
        grammar = sequence.grammar
        if grammar is not None:
            self.constrained_done += 1
            self.masks += grammar.masks
            self.mask_seconds += grammar.mask_seconds
        self._end(sequence.job, sequence.outcome(final))

    def structured_status(self) -> dict[str, Any]:
        """Constrained decoding: live grammar states, finished constrained sequences, and the
        mean time per token mask (feeding the token, computing and applying the mask)."""
        return {
            "grammar_states": len(self.grammar_states),
            "sequences_done": self.constrained_done,
            "mask_ms": round(1000 * self.mask_seconds / self.masks, 3) if self.masks else None,
        }

    def _end(self, job: Job, event: Finished | Failed) -> None:
        # counters first: whoever sees the final event sees them up to date
        self.requests_done += 1
        job.post(event)
