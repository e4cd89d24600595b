"""The error family and the documented error body.

Every error a client sees has the body ``{"code": str, "message": str, "detail"?: any}`` and a
status chosen by the exception class.  Core code and plugins raise these; the core's error layer
(:mod:`ddx_llm.middleware.error_shaping`) turns them into responses with :func:`describe`, which
first asks the ``ddx_llm_map_exception`` hook, so plugins can map their own exception types too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect


class LlmError(Exception):
    """Base of every error with a documented status and code.

    Args:
        message: human-readable summary, safe for clients (never a secret, never a traceback).
        detail: optional machine-readable detail (a string, a list of field errors, ...).
        headers: extra response headers, e.g. ``Retry-After``.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "llm_error"

    def __init__(
        self,
        message: str,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})

    def info(self) -> ErrorInfo:
        """The response this error maps to."""
        return ErrorInfo(self.status, self.code, self.message, self.detail, self.headers)


class RequestInvalid(LlmError):
    """The request is malformed, has a wrong type, or asks for something we cannot honour."""

    status = 422
    code = "request_invalid"


class ContextTooLong(LlmError):
    """Prompt plus requested completion does not fit the model's context window."""

    status = 422
    code = "context_too_long"


class ModelNotFound(LlmError):
    """The model id is not in the registry (or the route does not apply in this mode)."""

    status = 404
    code = "model_not_found"


class ModelUnavailable(LlmError):
    """The model exists but cannot serve now: loading, failed, or too large for memory."""

    status = 503
    code = "model_unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(retry_after))


class Overloaded(ModelUnavailable):
    """Admission control refused the request: too many are running and waiting."""

    code = "overloaded"


class RequestTooLarge(LlmError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "request_too_large"


class BadRequest(LlmError):
    """The request's HTTP framing is ambiguous or malformed (``Content-Length`` together with
    ``Transfer-Encoding``): it is refused and the connection closed (RFC 9112 §6.1)."""

    status = 400
    code = "bad_request"


class RequestTimeout(LlmError):
    """The client did not send its whole request body within ``[core] body_timeout_seconds``."""

    status = 408
    code = "request_timeout"


class UnsupportedMediaType(LlmError):
    """A JSON route got a body that is not declared JSON (``Content-Type`` missing or not
    ``application/json`` / ``application/*+json``)."""

    status = 415
    code = "unsupported_media_type"


class ClientClosed(LlmError):
    """The client left before its request was read or answered.  Not an error of ours: the
    status (nginx's 499) is never seen by the client, only by logs and metrics."""

    status = 499
    code = "client_closed"


@dataclass
class ErrorInfo:
    """A mapped error: the status, the documented body fields, and extra headers."""

    status: int
    code: str
    message: str
    detail: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] | None = None
    """A body in another API's own error shape (set by ``ddx_llm_shape_error`` for a surface
    such as Anthropic's Messages); None: the documented body."""

    def body(self) -> dict[str, Any]:
        """The documented ``{code, message, detail?}`` body (``detail`` omitted when None), plus
        the same facts in OpenAI's ``error`` envelope: the OpenAI SDKs (the Node one in
        particular) read only that, and would otherwise report "(no body)".  A ``payload``
        replaces it."""
        if self.payload is not None:
            return self.payload
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        body["error"] = {
            "message": self.message,
            "type": self.code,
            "code": self.code,
            "param": None,
        }
        return body


def leaf_exception(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-member exception groups, else ``exc`` itself.

    anyio task groups wrap what their tasks raise in ``ExceptionGroup``; clients must still get
    the status of the error that really happened.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


INTERNAL_ERROR = "internal server error"
HTTP_CODES = {
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed"),
}


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as ``[{field, message, type}]`` with dotted field paths."""
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]) or "(body)",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False)
    ]


def describe(exc: BaseException, app: Any, scope: Any) -> ErrorInfo:
    """The response for ``exc`` raised while serving ``scope``.

    The ``ddx_llm_map_exception`` hook answers first; then the core maps what it knows: an
    :class:`LlmError` maps to itself, Starlette's routing misses to 404 ``not_found`` / 405
    ``method_not_allowed``, a pydantic ``ValidationError`` to 422 ``request_invalid``; anything
    else is 500 ``llm_error`` with no detail (the traceback is for the log only).  Last, the
    ``ddx_llm_shape_error`` hook may restate the answer in another API's error shape.
    """
    info = _map(leaf_exception(exc), app, scope)
    if app is not None:
        shaped = app.hook.ddx_llm_shape_error(info=info, scope=scope, app=app)
        if shaped is not None:
            return shaped
    return info


def _map(exc: BaseException, app: Any, scope: Any) -> ErrorInfo:
    if app is not None:
        info = app.hook.ddx_llm_map_exception(exc=exc, scope=scope, app=app)
        if info is not None:
            return info
    if isinstance(exc, LlmError):
        return exc.info()
    if isinstance(exc, HTTPException):
        code, message = HTTP_CODES.get(exc.status_code, ("http_error", exc.detail))
        return ErrorInfo(exc.status_code, code, message, headers=dict(exc.headers or {}))
    if isinstance(exc, ValidationError):
        return RequestInvalid("invalid request", detail=validation_detail(exc)).info()
    if isinstance(exc, ClientDisconnect):
        return ClientClosed("the client closed the connection before its request was read").info()
    return ErrorInfo(500, LlmError.code, INTERNAL_ERROR)
