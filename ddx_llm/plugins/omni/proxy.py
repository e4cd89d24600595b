"""The omni chat proxy: ``POST /v1/chat/completions`` answered by the upstream router.

A pure-ASGI middleware placed inside auth (order 600), so request-ID, CORS, metrics, errors and
auth wrap it like any route; every other request falls through to our router.  For a chat
request it

1. reads the body (bounded by ``[core] max_body_bytes``) and validates it with our
   :class:`~ddx_llm.schemas.ChatCompletionRequest` (422 ``request_invalid`` naming the field);
2. refuses what the upstream would silently ignore or misapply, and the vendor fields that would
   make it load another model (:func:`check_supported`);
3. resolves the model in our registry (unknown → 404 ``model_not_found``; none named → the
   resident one) and holds a host lease for the whole request, so admission applies, swaps
   drain, and the ``RequestQueued``/``RequestStarted`` events are emitted;
4. forwards a rewritten body (:func:`upstream_body`) through the bridge to the upstream app on
   its own thread, and passes the answer back through :class:`.omni_response.ResponseRewriter`;
5. turns upstream failures into our errors, and emits exactly one ``RequestDone``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ddx_llm import events
from ddx_llm.body import parse_as, read_json
from ddx_llm.chat import check_context
from ddx_llm.errors import LlmError, ModelUnavailable, RequestInvalid, describe
from ddx_llm.middleware import BodyLimitMiddleware, route_path
from ddx_llm.registry import ModelEntry
from ddx_llm.schemas import ChatCompletionRequest
from ddx_llm.sse import DONE, encode_event

from .bridge import UpstreamStopped
from .response import ResponseRewriter, upstream_error

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
FORWARDED_SCOPE = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path",
                   "root_path", "client", "server")  # fmt: skip
"""What the upstream sees of the request: no query string (``api_key=``), no headers but the
body's, no state of ours."""

MODEL_CHOOSING_FIELDS = ("adapter_path", "draft_model", "draft-model")
"""Vendor fields with which the upstream would load another model or adapter from a path."""


class OmniChatMiddleware:
    """Serve chat through the upstream (see the module docstring).

    Args:
        app: the inner app (our router).
        max_body_bytes: ``[core] max_body_bytes`` (this middleware sits outside the core's
            body limit, so it applies it itself).
        default_max_tokens: the completion limit of requests that set none.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, default_max_tokens: int) -> None:
        self.app = app
        self.default_max_tokens = default_max_tokens
        self._limited = BodyLimitMiddleware(self._serve, max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and route_path(scope) == CHAT_PATH:
            await self._limited(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope["app"].context
        backend = ctx.backend
        data = await read_json(Request(scope, receive))
        chat = parse_as(ChatCompletionRequest, data)
        check_supported(chat, data, structured_output=backend.structured_output)
        requested = ctx.host.resolve(chat.model) if chat.model else None
        started = time.monotonic()
        async with ctx.host.lease(requested) as lease:
            rewriter = ResponseRewriter(
                send, lease.entry.id, ctx.hook, started, client_wants_usage=chat.include_usage
            )
            outcome = "error"
            try:
                body = upstream_body(data, chat, lease.handle.folder, lease.entry,
                                     self.default_max_tokens)  # fmt: skip
                gone: list[bool] = []
                error: Exception | None = None
                try:
                    await backend.upstream.serve(
                        backend.app,
                        upstream_scope(scope, body),
                        replay(body, receive, lambda: gone.append(True)),
                        rewriter.send,
                    )
                except Exception as exc:
                    error = exc
                outcome = result_of(rewriter, error, disconnected=bool(gone))
                if outcome == "error":
                    await self._fail(rewriter, error, ctx.hook, scope, send)
            except anyio.get_cancelled_exc_class():
                outcome = "cancelled"
                raise
            finally:
                events.emit(ctx.hook, rewriter.done_event(outcome))

    @staticmethod
    async def _fail(
        rewriter: ResponseRewriter, exc: Exception | None, hook: Any, scope: Scope, send: Send
    ) -> None:
        if isinstance(exc, UpstreamStopped):
            error: LlmError = ModelUnavailable("the omni upstream is not running", detail=str(exc))
        else:
            error = upstream_error(rewriter, exc)
        if not rewriter.forwarded:
            raise error from exc  # the errors plugin answers with our shape
        # The stream's headers are out: report in-band, as the core's SSE does.
        logger.error("omni upstream failed mid-stream: %s", error.detail or error.message)
        body = encode_event({"error": describe(error, hook, scope).body()}) + DONE
        await send({"type": "http.response.body", "body": body, "more_body": False})


def result_of(rewriter: ResponseRewriter, error: Exception | None, *, disconnected: bool) -> str:
    """The request's finish reason for ``RequestDone``: the upstream's (``stop``,
    ``tool_calls``, ...) when the answer went out whole; ``cancelled`` when the client left;
    else ``error``."""
    if error is None and rewriter.mode in ("json", "stream") and rewriter.complete:
        return rewriter.finish_reason or "stop"
    if rewriter.client_gone or disconnected:  # what the upstream raised then is a consequence
        return "cancelled"
    return "error"


def check_supported(chat: ChatCompletionRequest, data: dict, *, structured_output: bool) -> None:
    """Raise 422 ``request_invalid`` naming every parameter the upstream router would ignore or
    misapply (never silently ignored), and the vendor fields that choose models by path."""
    problems: dict[str, str] = {}
    for name in MODEL_CHOOSING_FIELDS:
        if name in data:
            problems[name] = "not accepted: models are chosen through the registry"
    ignored = {
        "stop": chat.stop,
        "seed": chat.seed is not None,
        "logit_bias": chat.logit_bias,
        "frequency_penalty": chat.frequency_penalty,
        "parallel_tool_calls": chat.parallel_tool_calls is False,
        "tool_choice": chat.tool_choice not in (None, "auto"),
    }
    for name, used in ignored.items():
        if used:
            problems[name] = "the omni backend's upstream router ignores it"
    if chat.presence_penalty:
        problems["presence_penalty"] = (
            "the omni backend's upstream router applies it as a multiplicative repetition "
            "penalty, not as OpenAI's presence penalty"
        )
    kind = (chat.response_format or {}).get("type")
    if kind == "json_object":
        problems["response_format"] = "the omni backend's upstream router ignores json_object"
    elif kind == "json_schema" and not structured_output:
        problems["response_format"] = (
            "json_schema needs the structured-output add-on (outlines), which is not installed"
        )
    if problems:
        raise RequestInvalid(
            f"not supported by the omni backend: {', '.join(problems)}",
            detail=[{"field": f, "message": m, "type": "unsupported"} for f, m in problems.items()],
        )


def upstream_body(
    data: dict, chat: ChatCompletionRequest, folder: str, entry: ModelEntry, default_limit: int
) -> bytes:
    """The body forwarded upstream: ``model`` is the folder the upstream cached the model
    under; the completion limit is the client's (checked against the context window) or the
    default, plus one, because the upstream yields one token fewer than it is asked for; a
    stream always asks for usage (for metrics; the rewriter drops it if the client did not)."""
    limit = chat.completion_limit
    if limit is None:
        limit = min(default_limit, entry.context_window)
    else:
        check_context(entry, 0, limit)  # the prompt is counted upstream only
    forwarded = {k: v for k, v in data.items() if k != "max_completion_tokens"}
    forwarded.update(model=folder, max_tokens=limit + 1)
    if chat.stream:
        options = data.get("stream_options")
        forwarded["stream_options"] = {**(options or {}), "include_usage": True}
    return json.dumps(forwarded).encode()


def upstream_scope(scope: Scope, body: bytes) -> dict[str, Any]:
    """A fresh scope for the upstream app (its router writes into the scope it gets)."""
    forwarded = {key: scope[key] for key in FORWARDED_SCOPE if key in scope}
    host = next((v for k, v in scope.get("headers", []) if k == b"host"), b"localhost")
    forwarded.update(
        query_string=b"",
        headers=[(b"host", host), (b"content-type", b"application/json"),
                 (b"content-length", str(len(body)).encode())],
        state={},
    )  # fmt: skip
    return forwarded


def replay(body: bytes, receive: Receive, on_disconnect: Any) -> Receive:
    """A ``receive`` that gives the (rewritten) body first, then our client's messages (the
    upstream listens for the disconnect), noting a disconnect with ``on_disconnect()``."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        if pending:
            return pending.pop()
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
        return message

    return replayed
