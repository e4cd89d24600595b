"""OpenAI sampling parameters → mlx-lm's sampler and logits processors.

:func:`sampling_params` runs on the event loop and produces plain values (checked, with the
defaults of ``[mlx]`` filled in); :func:`build_sampler` and :func:`build_processors` run in the
MLX worker thread, so every array they create belongs to that thread.

Mapping (mlx-lm 0.32 ``make_sampler`` / ``make_logits_processors``):

- ``temperature`` → ``temp`` (0 is greedy); ``top_p``, ``min_p`` and ``top_k`` (extensions, as
  vLLM's) → mlx-lm's filters of the same names, applied in mlx-lm's order (top-p, min-p, top-k)
  on the untempered distribution, then the temperature.
- ``presence_penalty`` / ``frequency_penalty`` → mlx-lm's processors of the same names (OpenAI's
  additive definitions, negative values allowed); they look at the last
  ``[mlx] penalty_context_size`` tokens, prompt included (mlx-lm's window, not the whole output).
- ``logit_bias`` → mlx-lm's additive bias; keys are token ids of the model's tokenizer.
- ``seed`` → the sequence's own random key (``mx.random.key(seed)``, split at every token), so a
  seeded request samples the same tokens whether it runs alone or batched with others, and never
  disturbs the worker's shared random state that unseeded requests draw from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ddx_llm.errors import RequestInvalid
from ddx_llm.schemas import ChatCompletionRequest


@dataclass(frozen=True)
class SamplingParams:
    """Everything the worker needs to generate one completion."""

    max_tokens: int
    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    """0: no top-k filter."""
    min_p: float = 0.0
    """0: no min-p filter."""
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    penalty_context_size: int = 20
    stops: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0


def sampling_params(
    request: ChatCompletionRequest,
    *,
    prompt_tokens: int,
    context_window: int,
    vocab_size: int,
    default_max_tokens: int,
    default_temperature: float,
    penalty_context_size: int,
) -> SamplingParams:
    """Check and resolve the request's sampling parameters.

    Without ``max_tokens``/``max_completion_tokens`` the limit is ``default_max_tokens``, capped
    at what is left of the context window (at least 1: an over-long prompt is the core's
    ``context_too_long``).  Raises RequestInvalid naming a ``logit_bias`` key that is not a token
    id of this model or whose bias is outside [-100, 100].
    """
    limit = request.completion_limit or max(
        1, min(default_max_tokens, context_window - prompt_tokens)
    )
    if request.top_logprobs and not request.logprobs:
        raise RequestInvalid(
            "top_logprobs needs logprobs: true",
            detail=[_field("top_logprobs", "set logprobs to true to get top_logprobs")],
        )
    top_k = request.top_k or 0
    if top_k >= vocab_size:  # keeps every token; mlx-lm's filter refuses such a k
        top_k = 0
    return SamplingParams(
        max_tokens=limit,
        temperature=default_temperature if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=top_k,
        min_p=request.min_p or 0.0,
        seed=None if request.seed is None else request.seed % 2**64,
        logit_bias=_logit_bias(request.logit_bias or {}, vocab_size),
        presence_penalty=request.presence_penalty or None,
        frequency_penalty=request.frequency_penalty or None,
        penalty_context_size=penalty_context_size,
        stops=tuple(request.stop or ()),
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
    )


def _logit_bias(bias: dict[str, float], vocab_size: int) -> tuple[tuple[int, float], ...]:
    resolved = []
    for key, value in bias.items():
        field = f"logit_bias.{key}"
        try:
            token = int(key)
        except ValueError:
            token = -1
        if not 0 <= token < vocab_size:
            raise RequestInvalid(
                f"logit_bias key {key!r} is not a token id of this model",
                detail=[_field(field, f"token ids of this model are 0..{vocab_size - 1}")],
            )
        if not -100 <= value <= 100:
            raise RequestInvalid(
                f"logit_bias value for {key} is outside [-100, 100]",
                detail=[_field(field, "a bias must be between -100 and 100")],
            )
        resolved.append((token, float(value)))
    return tuple(resolved)


def _field(name: str, message: str) -> dict[str, str]:
    return {"field": name, "message": message, "type": "unsupported"}


def build_sampler(params: SamplingParams) -> Any:
    """mlx-lm's sampler for ``params``, or a seeded one of the same definition (call in the
    worker thread: the arrays it makes belong to that thread)."""
    from mlx_lm.sample_utils import make_sampler

    top_p = params.top_p if params.top_p < 1.0 else 0.0  # 0 switches mlx-lm's top-p off
    if params.seed is None or params.temperature == 0:
        return make_sampler(
            temp=params.temperature, top_p=top_p, min_p=params.min_p, top_k=params.top_k
        )
    return seeded_sampler(params.seed, params.temperature, top_p, params.min_p, params.top_k)


def seeded_sampler(
    seed: int, temperature: float, top_p: float, min_p: float = 0.0, top_k: int = 0
) -> Any:
    """mlx-lm's categorical sampling (its filters on the untempered distribution in its order:
    top-p, min-p, top-k; then the temperature) drawing from a private key chain that starts at
    ``seed``."""
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

    key = mx.random.key(seed)

    def sample(logprobs: Any) -> Any:
        nonlocal key
        key, draw = mx.random.split(key)
        if 0 < top_p < 1:
            logprobs = apply_top_p(logprobs, top_p)
        if min_p > 0:
            logprobs = apply_min_p(logprobs, min_p)
        if top_k > 0:
            logprobs = apply_top_k(logprobs, top_k)
        return mx.random.categorical(logprobs * (1.0 / temperature), key=draw)

    return sample


def build_processors(params: SamplingParams) -> list[Any]:
    """mlx-lm's logits processors for ``params`` (call in the worker thread)."""
    from mlx_lm.sample_utils import make_logits_processors

    return make_logits_processors(
        logit_bias=dict(params.logit_bias) or None,
        presence_penalty=params.presence_penalty,
        presence_context_size=params.penalty_context_size,
        frequency_penalty=params.frequency_penalty,
        frequency_context_size=params.penalty_context_size,
    )
