"""Errors of the Messages routes in Anthropic's shape and statuses.

Body: ``{"type": "error", "error": {"type", "message"}, "request_id"}`` — what the Anthropic
SDKs read — with the service's own ``code``, ``message`` and ``detail`` beside it, so a client of
this service finds the same fields on every route.  The ``request-id`` header carries the request
id, as Anthropic's does (the SDKs expose it).

| ours | Anthropic |
|---|---|
| 422 ``request_invalid``, ``context_too_long`` (and other 400s) | 400 ``invalid_request_error`` |
| 401 ``unauthorized`` | 401 ``authentication_error`` |
| 403 | 403 ``permission_error`` |
| 404 ``model_not_found``, ``not_found`` | 404 ``not_found_error`` |
| 413 ``request_too_large`` | 413 ``request_too_large`` |
| 429 ``rate_limited`` (and any 429) | 429 ``rate_limit_error`` |
| 500 ``llm_error`` | 500 ``api_error`` |
| 503 ``overloaded`` | 529 ``overloaded_error`` |
| 503 ``model_unavailable`` (loading, failed, shutting down) | 503 ``overloaded_error`` |
| any other 4xx / 5xx (405, 408, 415 ...) | same status, ``invalid_request_error`` / ``api_error`` |
"""

from __future__ import annotations

from typing import Any

from ddx_llm.errors import ErrorInfo

STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
OVERLOADED = 529


def anthropic_status(info: ErrorInfo) -> int:
    if info.code == "overloaded":
        return OVERLOADED
    if info.status == 422:
        return 400
    return info.status


def error_type(status: int) -> str:
    if status in STATUS_TYPES:
        return STATUS_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_error(info: ErrorInfo, request_id: str | None) -> ErrorInfo:
    """``info`` restated for an Anthropic client (the same code, message and detail)."""
    status = anthropic_status(info)
    payload: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type(status), "message": info.message},
        "request_id": request_id,
        "code": info.code,
        "message": info.message,
    }
    if info.detail is not None:
        payload["detail"] = info.detail
    headers = dict(info.headers)
    if request_id:
        headers["request-id"] = request_id
    return ErrorInfo(status, info.code, info.message, info.detail, headers, payload=payload)
