"""The core's error layer: every failure becomes ``{code, message, detail?}`` with its status.

:class:`ErrorShapingMiddleware` catches what the layers inside it and the router raise, and
answers through :func:`ddx_llm.errors.describe` (the ``ddx_llm_map_exception`` hook first, then
the core's own mapping).  It is a core layer, not a plugin, so disabling any plugin never turns
an error into the server's plain-text 500.  The app places it inside the plugin middleware that
must decorate error responses (request id, CORS, metrics) and outside the ones that raise
(auth, rate limits).  The app's outermost wrapper (:class:`~ddx_llm.factory.DdxApp`) shapes, with
the same function, what a plugin middleware outside this layer raises.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import describe

logger = logging.getLogger("ddx_llm.errors")

ORDER = 400
NAME = "errors"


STARTED = "ddx_llm.response_started"
"""Scope key: a one-item list, true once a response start went out through the outermost
error layer — what every error layer of the request reads instead of wrapping ``send``."""


class ErrorShapingMiddleware:
    """Turn exceptions from the inner app into documented error responses.

    If the response has already started (a stream), nothing more can be sent: the error is
    logged and the response ends unfinished (the SSE layer reports in-band errors itself,
    before this).  Whether it started is tracked once per request, by the outermost layer
    (``outermost=True``: :class:`~ddx_llm.factory.DdxApp`'s); a layer inside it reads that
    (:data:`STARTED`) instead of wrapping ``send`` again — every message of a stream passes
    through each wrapper.
    """

    def __init__(self, app: ASGIApp, context: Any, *, outermost: bool = False) -> None:
        self.app = app
        self.context = context
        self.outermost = outermost

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = None if self.outermost else scope.get(STARTED)
        inner_send = send
        if started is None:
            started = scope[STARTED] = [False]

            async def inner_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    started[0] = True
                await send(message)

        try:
            await self.app(scope, receive, inner_send)
        except Exception as exc:
            await answer_error(exc, self.context, scope, receive, send, started=started[0])


async def answer_error(
    exc: Exception, context: Any, scope: Scope, receive: Receive, send: Send, *, started: bool
) -> bool:
    """Log ``exc`` and send its error response; False when the response had already started
    (nothing can be sent then: the caller lets the response end unfinished)."""
    info = describe(exc, context, scope)
    where = f"{scope['method']} {scope['path']}"
    if info.status == 500:  # unexpected: the traceback is for the operator
        logger.error("%s -> %d %s", where, info.status, info.code, exc_info=exc)
    elif info.status > 500:  # documented unavailability: no traceback needed
        logger.warning("%s -> %d %s: %s", where, info.status, info.code, info.message)
    else:
        logger.info("%s -> %d %s: %s", where, info.status, info.code, info.message)
    if started:
        logger.error("%s failed after its response started; connection closed", where)
        return False
    response = JSONResponse(info.body(), status_code=info.status, headers=info.headers)
    await response(scope, receive, send)
    return True
