"""The upstream router's answer → our :class:`~ddx_llm.backend.Delta` pieces, or our errors.

:class:`StreamReader` reads the ASGI messages of the upstream's response to the streamed
request :mod:`.request` makes.  The upstream's stream, as mlx-omni-server 0.5.3 sends it:

- one SSE event per body message (an event cut across messages is put back together);
- content chunks ``{"choices": [{"delta": {"role", "content"}, "logprobs"}]}``: one a token,
  except with ``tools``, where text is held back (20 characters) to spot tool-call markers;
- the finish chunk: ``finish_reason`` ``stop`` or ``tool_calls``, the parsed calls whole in
  ``delta.tool_calls`` (``{index, id, function: {name, arguments}}``);
- a usage chunk (it repeats the finish chunk and adds ``usage``) when at least one token was
  generated, then ``data: [DONE]``.

Each content chunk becomes a delta of one token and the calls one delta; the last delta, once
the stream is over, has the finish reason and the usage: ``prompt_tokens`` is our exact count
(the upstream's own counts the last prompt token twice when the whole prompt was cached),
``completion_tokens`` the upstream's, and the finish reason becomes ``length`` when the
completion reached the limit (the upstream never says ``length``).  The upstream's ``model``,
``id`` and ``created`` are not used: the core shapes every answer.

An error answer (a FastAPI 422, the text/plain 500 its error middleware sends before raising)
and an exception of the app become our errors through :func:`upstream_error`.
"""

from __future__ import annotations

import json
from typing import Any

from ddx_llm.backend import Delta, ToolCallDelta, Usage
from ddx_llm.errors import LlmError, ModelUnavailable, RequestInvalid

EVENT_END = b"\n\n"
DATA = b"data: "
DONE = b"[DONE]"


class StreamReader:
    """One upstream response, message by message (see the module docstring).

    Args:
        prompt_tokens: the prompt's exact length (the backend's ``prepare``).
        limit: the completion limit promised to the client.
    """

    def __init__(self, *, prompt_tokens: int, limit: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.limit = limit
        self.status: int | None = None
        self.error_body = b""
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.tokens = 0
        """Tokens accounted for by the deltas given so far."""
        self._buffer = b""

    def feed(self, message: dict[str, Any]) -> list[Delta]:
        """The deltas of one ASGI message the upstream sent."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return []
        if message["type"] != "http.response.body":
            return []
        body = message.get("body", b"")
        if self.status != 200:
            self.error_body += body
            return []
        self._buffer += body
        complete, _, self._buffer = self._buffer.rpartition(EVENT_END)
        deltas: list[Delta] = []
        for event in complete.split(EVENT_END) if complete else []:
            data = event.strip(b"\n")
            if data.startswith(DATA) and data[len(DATA) :] != DONE:
                deltas.extend(self._chunk(json.loads(data[len(DATA) :])))
        return deltas

    def _chunk(self, chunk: dict[str, Any]) -> list[Delta]:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
            return []  # it repeats the finish chunk
        choices = chunk.get("choices") or [{}]
        choice = choices[0]
        delta = choice.get("delta") or {}
        deltas = []
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.tokens += 1
            deltas.append(Delta(content=content, tokens=1))
        calls = [tool_call(call, i) for i, call in enumerate(delta.get("tool_calls") or [])]
        if calls:
            deltas.append(Delta(tool_calls=calls))
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return deltas

    def end(self) -> Delta:
        """The last delta, once the upstream's response is over: the finish reason and usage.
        Raises our error when the upstream answered with an error or ended its stream
        without a finish reason."""
        if self.status != 200:
            raise upstream_error(self.status, self.error_body, None)
        if self.finish_reason is None:
            raise LlmError(
                "the omni upstream failed", detail="its stream ended without a finish reason"
            )
        completion = int((self.usage or {}).get("completion_tokens") or self.tokens)
        finish = self.finish_reason
        if finish == "stop" and completion >= self.limit:
            finish = "length"
        rest, self.tokens = max(0, completion - self.tokens), completion
        return Delta(tokens=rest, finish_reason=finish, usage=Usage(self.prompt_tokens, completion))

    def error(self, exc: BaseException) -> LlmError:
        """Our error for ``exc``, raised by the upstream app while answering."""
        return upstream_error(self.status, self.error_body, exc)


def tool_call(call: dict[str, Any], position: int) -> ToolCallDelta:
    """One whole upstream tool call as the first and only piece of call ``index``."""
    function = call.get("function") or {}
    return ToolCallDelta(
        index=int(call.get("index", position)),
        id=call.get("id"),
        name=function.get("name"),
        arguments=function.get("arguments") or "",
    )


def upstream_error(status: int | None, body: bytes, exc: BaseException | None) -> LlmError:
    """Our error for an upstream failure: a FastAPI 422 → 422 ``request_invalid``; a model that
    cannot be loaded or memory → 503 ``model_unavailable``; anything else → 500 ``llm_error``.

    ``status`` and ``body``: the upstream's error answer (None and empty when there was
    none); ``exc``: what the upstream raised, if anything.
    """
    if exc is None and status == 422:
        return invalid_request(_fastapi_detail(body))
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and str(exc).startswith("Model loading failed")
    ):
        return ModelUnavailable("the model cannot serve this request", detail=_describe(exc))
    if exc is not None:
        return LlmError("the omni upstream failed", detail=_describe(exc))
    text = body.decode(errors="replace")[:500]
    return LlmError("the omni upstream failed", detail=f"HTTP {status}: {text}")


def invalid_request(detail: list[dict[str, Any]]) -> RequestInvalid:
    """422 ``request_invalid`` naming the fields of ``detail`` (``[{field, message, type}]``)."""
    fields = ", ".join(item["field"] for item in detail) or "(body)"
    return RequestInvalid(f"invalid request: {fields}", detail=detail)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _fastapi_detail(raw: bytes) -> list[dict[str, Any]]:
    """FastAPI's ``{"detail": [{"loc": ["body", ...], "msg", "type"}]}`` in our field format."""
    try:
        items = json.loads(raw).get("detail")
    except (ValueError, AttributeError):
        items = None
    if not isinstance(items, list):
        return [{"field": "(body)", "message": raw.decode(errors="replace")[:500], "type": ""}]
    detail = []
    for item in items:
        loc = [str(part) for part in item.get("loc", []) if part != "body"]
        detail.append(
            {"field": ".".join(loc) or "(body)", "message": item.get("msg", ""),
             "type": item.get("type", "")}
        )  # fmt: skip
    return detail
