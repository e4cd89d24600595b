"""What the upstream router answers, on its way back to the client (our loop).

:class:`ResponseRewriter` is the ``send`` the bridge delivers the upstream's ASGI messages to:

- a success body keeps its shape; only the value of ``model`` (the server's folder path) is
  replaced by the registry id, in the JSON answer and in every SSE chunk (re-serialized as the
  upstream serializes them, so nothing else changes);
- a stream gets ``X-Accel-Buffering: no`` and loses the hop-by-hop ``Connection`` header (which
  HTTP/2 forbids); the usage chunk the proxy always asks for is dropped when the client did not
  ask for it;
- an error answer (a FastAPI 422, a text/plain 500) is held back, never sent: the proxy raises
  our error instead (:func:`upstream_error`), which the errors plugin shapes;
- observation events: the first content or tool-call chunk is ``FirstToken``, each later one
  ``TokensGenerated``; the finish reason and usage are kept for ``RequestDone``.
"""

from __future__ import annotations

import json
from typing import Any

from ddx_llm import events
from ddx_llm.errors import LlmError, ModelUnavailable, RequestInvalid

DROPPED_HEADERS = {b"connection", b"content-length", b"keep-alive", b"transfer-encoding"}
EVENT_END = b"\n\n"
DONE = b"data: [DONE]"


class ResponseRewriter:
    """Filter the upstream's response messages into our ``send`` (see the module docstring).

    Args:
        send: our ASGI ``send``.
        model: the registry id clients see as ``model``.
        hook: the hook relay, for observation events.
        started: ``time.monotonic()`` when the request started.
        client_wants_usage: the client asked for ``stream_options.include_usage``.
    """

    def __init__(
        self, send: Any, model: str, hook: Any, started: float, *, client_wants_usage: bool
    ) -> None:
        self._send = send
        self.model = model
        self.client_wants_usage = client_wants_usage
        self.status: int | None = None
        self.mode: str | None = None  # "stream", "json" or "error"
        self.headers: list[tuple[bytes, bytes]] = []
        self.forwarded = False  # our response has started
        self.complete = False  # the upstream's last body message went through
        self.client_gone = False
        self.error_body = b""
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.clock = events.TokenClock(hook, model, started)
        self._buffer = b""

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self._start(message)
            if self.mode == "stream":
                await self._out({**message, "headers": self.headers})
            return
        if message["type"] != "http.response.body":
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        if self.mode == "stream":
            self._buffer += body
            events_out, _, self._buffer = self._buffer.rpartition(EVENT_END)
            out = self._rewrite_events(events_out) if events_out else b""
            if not more:
                out += self._buffer
                self._buffer = b""
            if out or not more:
                await self._out({"type": "http.response.body", "body": out, "more_body": more})
            self.complete = not more
            return
        self.error_body += body
        if more:
            return
        self.complete = True
        if self.mode == "json":
            await self._send_json(self.error_body)

    def _start(self, message: dict[str, Any]) -> None:
        self.status = message["status"]
        headers = [(k.lower(), v) for k, v in message.get("headers", [])]
        content_type = dict(headers).get(b"content-type", b"")
        if not 200 <= self.status < 300:
            self.mode = "error"
        elif content_type.startswith(b"text/event-stream"):
            self.mode = "stream"
            headers = [(k, v) for k, v in headers if k not in DROPPED_HEADERS]
            headers.append((b"x-accel-buffering", b"no"))
        else:
            self.mode = "json"
        self.headers = headers

    async def _send_json(self, raw: bytes) -> None:
        try:
            document = json.loads(raw)
        except ValueError:  # not JSON after all: passed on as it is
            document = None
        if isinstance(document, dict):
            document["model"] = self.model
            self._observe_choices(document.get("choices"))
            self.usage = document.get("usage") or self.usage
            # Starlette's JSONResponse rendering, as the upstream's own answer was rendered
            raw = json.dumps(
                document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
            ).encode()
        headers = [(k, v) for k, v in self.headers if k != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        await self._out({"type": "http.response.start", "status": self.status, "headers": headers})
        await self._out({"type": "http.response.body", "body": raw, "more_body": False})

    def _rewrite_events(self, data: bytes) -> bytes:
        out = []
        for event in data.split(EVENT_END):
            rewritten = self._rewrite_event(event.strip(b"\n"))
            if rewritten is not None:
                out.append(rewritten + EVENT_END)
        return b"".join(out)

    def _rewrite_event(self, event: bytes) -> bytes | None:
        if not event.startswith(b"data: ") or event == DONE:
            return event
        try:
            chunk = json.loads(event[len(b"data: ") :])
        except ValueError:
            return event
        if not isinstance(chunk, dict):
            return event
        if "usage" in chunk:
            self.usage = chunk.get("usage") or self.usage
            if not self.client_wants_usage:
                return None  # the proxy asked for it, for metrics only
        self._observe_choices(chunk.get("choices"), streamed=True)
        if "model" in chunk:
            chunk["model"] = self.model
        return b"data: " + json.dumps(chunk).encode()  # the upstream's own serialization

    def _observe_choices(self, choices: Any, *, streamed: bool = False) -> None:
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        if not streamed or not (delta.get("content") or delta.get("tool_calls")):
            return
        self.clock.tokens(1)

    async def _out(self, message: dict[str, Any]) -> None:
        try:
            await self._send(message)
        except Exception:
            self.client_gone = True
            raise
        if message["type"] == "http.response.start":
            self.forwarded = True

    def done_event(self, finish: str) -> events.RequestDone:
        """The request's ``RequestDone``, with the upstream's usage when it gave one."""
        usage = self.usage or {}
        return self.clock.done(
            finish,
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or self.clock.generated),
        )


def upstream_error(rewriter: ResponseRewriter, exc: BaseException | None) -> LlmError:
    """Our error for an upstream failure: a FastAPI 422 → 422 ``request_invalid``; a model that
    cannot be loaded or memory → 503 ``model_unavailable``; anything else → 500 ``llm_error``."""
    if exc is None and rewriter.status == 422:
        detail = _fastapi_detail(rewriter.error_body)
        fields = ", ".join(item["field"] for item in detail) or "(body)"
        return RequestInvalid(f"invalid request: {fields}", detail=detail)
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and str(exc).startswith("Model loading failed")
    ):
        return ModelUnavailable("the model cannot serve this request", detail=_describe(exc))
    if exc is not None:
        return LlmError("the omni upstream failed", detail=_describe(exc))
    text = rewriter.error_body.decode(errors="replace")[:500]
    return LlmError("the omni upstream failed", detail=f"HTTP {rewriter.status}: {text}")


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
