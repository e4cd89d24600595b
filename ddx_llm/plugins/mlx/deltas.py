"""Worker events → :class:`~ddx_llm.backend.Delta` pieces for the core.

A reasoning model's thinking is split off first (:class:`~.reasoning.ThinkSplitter`: reasoning
deltas), then the answer text goes through the request's :class:`~.tools.ToolCallStream` when
it has tools (calls become OpenAI tool-call deltas); logprobs stay with the text they belong to,
and the final event becomes the finish delta with the finish reason and usage.  Runs on the
event loop, one per request.
"""

from __future__ import annotations

from typing import Any

from ddx_llm.backend import Delta, ToolCallDelta, Usage
from ddx_llm.errors import LlmError
from ddx_llm.schemas import TokenLogprob

from .jobs import Failed, Finished, Piece
from .reasoning import REASONING, ThinkSplitter
from .tools import ToolCallStream


class DeltaBuilder:
    """Worker events → deltas: text through the tool-call parser, logprobs kept with the text
    they belong to, and the finish delta with the finish reason and usage."""

    def __init__(
        self,
        calls: ToolCallStream | None,
        *,
        want_logprobs: bool,
        thinking: ThinkSplitter | None = None,
    ) -> None:
        self.calls = calls
        self.want_logprobs = want_logprobs
        self.thinking = thinking
        self._logprobs: list[TokenLogprob] = []

    def feed(self, events: list[Any]) -> list[Delta]:
        text, tokens = "", 0
        finished: Finished | None = None
        for event in events:
            if isinstance(event, Piece):
                text += event.text
                tokens += event.tokens
                self._logprobs.extend(event.logprobs or [])
            elif isinstance(event, Finished):
                finished = event
            elif isinstance(event, Failed):
                raise event.error
        deltas = []
        if self.thinking is not None:
            pieces = self.thinking.feed(text) + (self.thinking.flush() if finished else [])
            thought = "".join(piece for kind, piece in pieces if kind == REASONING)
            text = "".join(piece for kind, piece in pieces if kind != REASONING)
            if thought:
                deltas.append(Delta(reasoning=thought))
        items: list[str | ToolCallDelta] = [text] if text else []
        if self.calls is not None:
            items = self.calls.feed(text) + (self.calls.finish() if finished else [])
        deltas += [self._delta(item) for item in items]
        if finished is not None:
            deltas.append(self._finish(finished))
        if deltas:
            deltas[0].tokens = tokens
        elif tokens:
            deltas.append(Delta(tokens=tokens))  # held-back text: counted, nothing to show yet
        return deltas

    def _delta(self, item: str | ToolCallDelta) -> Delta:
        logprobs, self._logprobs = self._logprobs, []
        logprobs_out = logprobs if self.want_logprobs else None
        if isinstance(item, str):
            return Delta(content=item, logprobs=logprobs_out)
        return Delta(tool_calls=[item], logprobs=logprobs_out)

    def _finish(self, finished: Finished) -> Delta:
        reason = finished.reason
        made_calls = self.calls is not None and self.calls.calls > 0
        if reason == "cancelled":
            if not made_calls:  # only this backend cancels, and only after a single call
                raise LlmError("the generation was cancelled")
            reason = "stop"
        if reason == "stop" and made_calls:
            reason = "tool_calls"
        delta = Delta(
            finish_reason=reason,
            usage=Usage(finished.prompt_tokens, finished.completion_tokens),
        )
        if self._logprobs and self.want_logprobs:  # logprobs of held-back tokens: keep them
            delta.content, delta.logprobs, self._logprobs = "", self._logprobs, []
        return delta
