"""Reuse of processed prompts across requests, on mlx-lm's ``LRUPromptCache``.

When a sequence finishes, its KV cache (prompt + generated tokens, exactly) is stored under its
token ids.  A later prompt that starts with the same tokens — the next turn of a conversation,
a shared system prompt, a retried request — gets a copy of the nearest stored cache trimmed to
the common prefix, and only the rest of its prompt is processed.  Bounded by entries and bytes
(``[mlx] prompt_cache_entries``, ``prompt_cache_gb``); least recently used entries go first.

Lives in the MLX worker thread: ``LRUPromptCache`` has no lock and its arrays belong to that
thread.  There is one per loaded model, so unloading the model drops its cache too.
"""

from __future__ import annotations

from typing import Any

MODEL_KEY = "model"
"""The LRU is keyed by model too; each worker has one model, so one constant key."""


class PromptCache:
    """A bounded store of KV caches keyed by the tokens they hold (entries 0: disabled)."""

    def __init__(self, entries: int, max_bytes: int) -> None:
        self._lru: Any = None
        if entries > 0:
            from mlx_lm.models.cache import LRUPromptCache

            self._lru = LRUPromptCache(max_size=entries, max_bytes=max_bytes)
        self.hits = 0
        self.tokens_reused = 0

    def fetch(self, tokens: list[int]) -> tuple[list[Any] | None, list[int]]:
        """``(cache, rest)``: a private copy of the cache for the longest stored prefix of
        ``tokens`` and the tokens still to process (never empty: a whole-prompt hit is trimmed
        by one token, since generation starts by feeding the last prompt token), or
        ``(None, tokens)``."""
        if self._lru is None:
            return None, tokens
        from mlx_lm.models.cache import trim_prompt_cache

        cache, rest = self._lru.fetch_nearest_cache(MODEL_KEY, tokens)
        if cache is None:
            return None, tokens
        if not rest:
            if trim_prompt_cache(cache, 1) != 1:
                return None, tokens  # an untrimmable cache (e.g. SSM layers): start afresh
            rest = tokens[-1:]
        self.hits += 1
        self.tokens_reused += len(tokens) - len(rest)
        return cache, list(rest)

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep ``cache``, which holds exactly ``tokens`` (never modify it afterwards)."""
        if self._lru is not None and tokens:
            self._lru.insert_cache(MODEL_KEY, list(tokens), cache)

    def status(self) -> dict[str, Any]:
        if self._lru is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "entries": len(self._lru),
            "mb": round(self._lru.nbytes / 1e6, 1),
            "hits": self.hits,
            "tokens_reused": self.tokens_reused,
        }

    def clear(self) -> None:
        if self._lru is not None:
            self._lru.trim_to(n_sequences=0)
