"""The mock's canned answers, as backend deltas: the seed's tool call, the echo, the thinking
echo, and log probabilities of certain pieces."""

from __future__ import annotations

import re

from ddx_llm.backend import Delta, ToolCallDelta
from ddx_llm.errors import LlmError
from ddx_llm.schemas import ChatCompletionRequest, TokenLogprob, TopLogprob

CANNED_CALL = ("call_0", "get_weather", ['{"city":', '"Berlin"}'])
"""The seed's canned tool call: id, function name, and the arguments as streamed pieces."""


def tool_call_pieces() -> list[Delta]:
    """The canned call as deltas: id and name first, then the arguments in two pieces."""
    call_id, name, arguments = CANNED_CALL
    return [
        Delta(tool_calls=[ToolCallDelta(0, id=call_id, name=name)], tokens=1),
        *(Delta(tool_calls=[ToolCallDelta(0, arguments=part)], tokens=1) for part in arguments),
        Delta(finish_reason="tool_calls"),
    ]


def echo_pieces(text: str, request: ChatCompletionRequest, *, fail: bool = False):
    """Yield the words of ``text`` (each with its leading space), stopping at ``max_tokens``
    (``length``) or before the first ``stop`` string (``stop``)."""
    limit = request.completion_limit
    stops = request.stop or []
    emitted = ""
    for count, word in enumerate(re.findall(r"\s*\S+", text)):
        if fail and count == 2:
            raise LlmError("mock failure (scenario 'error')", detail="raised on purpose mid-stream")
        if limit is not None and count >= limit:
            yield Delta(finish_reason="length")
            return
        candidate = emitted + word
        cut = min((i for i in (candidate.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            if cut > len(emitted):
                yield Delta(content=candidate[len(emitted) : cut], tokens=1)
            yield Delta(finish_reason="stop")
            return
        emitted = candidate
        yield Delta(content=word, tokens=1)
    yield Delta(finish_reason="stop")


def reasoning_pieces(text: str, request: ChatCompletionRequest):
    """``Thinking about: <text>`` word by word as reasoning, then the echo of ``text``; the
    completion limit counts both."""
    limit = request.completion_limit
    thoughts = re.findall(r"\s*\S+", f"Thinking about: {text}")
    for count, word in enumerate(thoughts):
        if limit is not None and count >= limit:
            yield Delta(finish_reason="length")
            return
        yield Delta(reasoning=word, tokens=1)
    left = None if limit is None else limit - len(thoughts)
    yield from echo_pieces(
        text, request.model_copy(update={"max_tokens": left, "max_completion_tokens": None})
    )


def certain(piece: str, top: int) -> TokenLogprob:
    """The log probability of a deterministic piece: 0.0 (probability 1), itself the only
    alternative worth listing."""
    data = list(piece.encode())
    alternatives = [TopLogprob(token=piece, logprob=0.0, bytes=data)] if top else []
    return TokenLogprob(token=piece, logprob=0.0, bytes=data, top_logprobs=alternatives)


def last_user_text(request: ChatCompletionRequest) -> str:
    return next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
