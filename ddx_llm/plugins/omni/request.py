"""Our :class:`~ddx_llm.schemas.ChatCompletionRequest` → the upstream router's request.

- :func:`check_supported` refuses (422 ``request_invalid`` naming every field) what the
  upstream router would silently ignore or misapply, and the vendor fields with which it would
  load another model from a path;
- :func:`upstream_body` is the JSON body forwarded: always a stream with usage, ``model`` the
  folder the upstream cached the model under, the completion limit plus one (the upstream
  yields one token fewer than it is asked for);
- :func:`completion_limit` is the limit we promise: the client's, else ``[omni] max_tokens``
  capped at what the context window leaves after the prompt;
- :func:`upstream_scope` is the ASGI scope of that request: nothing of our client's request
  (no query string, no headers but the body's, no state of ours).
"""

from __future__ import annotations

from typing import Any

from ddx_llm.errors import RequestInvalid
from ddx_llm.schemas import ChatCompletionRequest
from ddx_llm.schemas.request import SAMPLING_EXTENSIONS

CHAT_PATH = "/v1/chat/completions"
MODEL_CHOOSING_FIELDS = ("adapter_path", "draft_model", "draft-model")
"""Vendor fields with which the upstream would load another model or adapter from a path."""
IGNORED = "the omni backend's upstream router ignores it"


def check_supported(chat: ChatCompletionRequest, *, structured_output: bool) -> None:
    """Raise 422 ``request_invalid`` naming every parameter the upstream router would ignore or
    misapply (never silently ignored), and the vendor fields that choose models by path.

    ``structured_output``: the add-on for ``response_format: json_schema`` is installed.
    """
    problems: dict[str, str] = {}
    extra = chat.model_extra or {}
    for name in MODEL_CHOOSING_FIELDS:
        if name in extra:
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
            problems[name] = IGNORED
    if chat.presence_penalty:
        problems["presence_penalty"] = (
            "the omni backend's upstream router applies it as a multiplicative repetition "
            "penalty, not as OpenAI's presence penalty"
        )
    if chat.logprobs:
        problems["logprobs"] = (
            "the omni backend's upstream router reports them only per streamed text piece: "
            "tokens without text of their own (parts of a character, text held back to spot "
            "tool calls) would be missing"
        )
    if chat.top_logprobs:
        problems["top_logprobs"] = "needs logprobs, which the omni backend cannot report"
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


def completion_limit(
    chat: ChatCompletionRequest, prompt_tokens: int, context_window: int, default: int
) -> int:
    """The client's ``max_completion_tokens`` / ``max_tokens``, else ``default`` capped at
    what the context window leaves after the prompt (at least 1)."""
    return chat.completion_limit or max(1, min(default, context_window - prompt_tokens))


def upstream_body(chat: ChatCompletionRequest, folder: str, limit: int | None) -> dict[str, Any]:
    """The body forwarded upstream (module docstring).  Vendor fields the upstream reads
    (``extra_body``, ``enable_thinking``) go along, ``top_k`` and ``min_p`` inside
    ``extra_body``; with ``limit`` None it has no limit yet (enough to count the prompt)."""
    body = chat.model_dump(mode="json", exclude_none=True)
    filters = {name: body.pop(name) for name in SAMPLING_EXTENSIONS if name in body}
    if filters:  # the upstream's sampler reads them from a body field named extra_body
        body["extra_body"] = {**(body.get("extra_body") or {}), **filters}
    body.pop("max_completion_tokens", None)
    body.pop("max_tokens", None)
    options = body.get("stream_options") or {}
    body.update(model=folder, stream=True, stream_options={**options, "include_usage": True})
    if limit is not None:
        body["max_tokens"] = limit + 1
    return body


def upstream_scope(body_length: int) -> dict[str, Any]:
    """A fresh ASGI scope for ``POST /v1/chat/completions`` with a JSON body of
    ``body_length`` bytes.  ASGI spec 2.4: a failing ``send`` means the client left, so the
    upstream's streaming response does not also poll ``receive`` for a disconnect."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT_PATH,
        "raw_path": CHAT_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"omni-upstream"),
            (b"content-type", b"application/json"),
            (b"content-length", str(body_length).encode()),
        ],
        "client": None,
        "server": None,
        "state": {},
    }
