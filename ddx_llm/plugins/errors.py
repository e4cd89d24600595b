"""The ``errors`` plugin: every failure becomes ``{code, message, detail?}`` with its status.

Its middleware (order 400) catches what the app raises and answers through the
``ddx_llm_map_exception`` hook; its own hook implementation maps routing misses (404/405),
pydantic validation errors and the error family.  Anything unmapped is a 500 ``llm_error`` whose
traceback goes to the log, never to the client.  Disable it (``disabled_plugins = ["errors"]``)
only if another plugin takes over that job.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ddx_llm import hookimpl
from ddx_llm.body import validation_detail
from ddx_llm.errors import ErrorInfo, LlmError, RequestInvalid, describe
from ddx_llm.middleware import MiddlewareSpec

logger = logging.getLogger(__name__)

ORDER = 400

HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class ErrorMiddleware:
    """Turn exceptions from the inner app into documented error responses.

    If the response has already started (a stream), nothing more can be sent: the error is
    logged and the connection ends (the SSE layer reports in-band errors itself).
    """

    def __init__(self, app: ASGIApp, hook: Any) -> None:
        self.app = app
        self.hook = hook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            info = describe(exc, self.hook, scope)
            where = f"{scope['method']} {scope['path']}"
            if info.status == 500:  # unexpected: the traceback is for the operator
                logger.error("%s -> %d %s", where, info.status, info.code, exc_info=exc)
            elif info.status > 500:  # documented unavailability: no traceback needed
                logger.warning("%s -> %d %s: %s", where, info.status, info.code, info.message)
            else:
                logger.info("%s -> %d %s: %s", where, info.status, info.code, info.message)
            if started:
                logger.error("%s failed after its response started; connection closed", where)
                return
            response = JSONResponse(info.body(), status_code=info.status, headers=info.headers)
            await response(scope, receive, send)


@hookimpl
def ddx_llm_middleware(hook: Any) -> MiddlewareSpec:
    return MiddlewareSpec("errors", ORDER, lambda app: ErrorMiddleware(app, hook))


@hookimpl(trylast=True)
def ddx_llm_map_exception(exc: BaseException) -> ErrorInfo | None:
    if isinstance(exc, LlmError):
        return exc.info()
    if isinstance(exc, HTTPException):
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return ErrorInfo(exc.status_code, code, message, headers=dict(exc.headers or {}))
    if isinstance(exc, ValidationError):
        return RequestInvalid("invalid request", detail=validation_detail(exc)).info()
    return None
