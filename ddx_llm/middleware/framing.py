"""The core's request-framing guard: how a request's body arrives, and what the connection
does after the answer.

:class:`FramingMiddleware` (order 350: inside request id, CORS and metrics, so what it answers
carries their headers and is counted; outside the error layer, so it sees every response the
app gives) promises, for every HTTP request:

- **No ambiguous framing.**  ``Content-Length`` together with ``Transfer-Encoding`` is refused
  with 400 ``bad_request`` and ``Connection: close`` before any other layer runs, so a request
  hidden in the body is never served (RFC 9112 §6.1; h11 would let ``Transfer-Encoding`` win
  and keep the connection open).
- **A bounded body.**  The whole body must arrive within ``[core] body_timeout_seconds`` of the
  request's start; a read past that raises :class:`~ddx_llm.errors.RequestTimeout` (408
  ``request_timeout``, shaped by the error layer) and HTTP/1.1 closes the connection.
- **Early answers keep the connection usable.**  When the response starts before the client
  has sent its whole body (a 401, 413 or 415 decided from the headers), the rest is read and
  discarded first, up to ``[core] max_body_bytes`` and :data:`DRAIN_SECONDS`, so the
  connection can carry the next request.  Over HTTP/1.1, a body that cannot be drained so
  (larger, stalled, timed out) gets ``Connection: close`` on the response, so the client knows
  not to reuse the connection.  Over HTTP/2 a stream's end is never sent before the request's
  end (see :meth:`BodyWatch.discard_rest`).

A route that starts its response and only then reads the request body is not supported: the
body is discarded at the response start.  No route of the core does that.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BadRequest, RequestTimeout
from .error_shaping import answer_error

logger = logging.getLogger("ddx_llm.errors")

ORDER = 350
NAME = "framing"
DRAIN_SECONDS = 2.0
"""Longest wait for the rest of a body after an early answer: a client sending its body has it
in flight, so this is ample; a client that stalls gets ``Connection: close`` instead."""
HTTP1 = frozenset({"1.0", "1.1"})
CLOSE = (b"connection", b"close")


class BodyWatch:
    """The request body as the client delivers it: the app's ``receive`` with a deadline, and
    what is known about the rest.

    Attributes:
        length: the declared ``Content-Length`` (None when chunked or absent).
        received: body bytes delivered so far (to the app or drained).
        done: the client has sent the whole body (or the request has none).
        gone: the client disconnected.
        timed_out: the deadline passed before the body ended.
    """

    def __init__(self, receive: Receive, scope: Scope, *, timeout: float, drain_bytes: int):
        self._receive = receive
        self.timeout = timeout
        self.deadline = anyio.current_time() + timeout
        self.drain_bytes = drain_bytes
        lengths = [v for k, v in scope["headers"] if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" for k, _ in scope["headers"])
        self.http1 = scope.get("http_version", "1.1") in HTTP1
        self.ambiguous = bool(lengths) and chunked
        self.length = int(lengths[0]) if lengths and lengths[0].isdigit() else None
        self.received = 0
        # HTTP/1.1 without a length or chunking has no body; HTTP/2 says so only at the end
        self.done = self.http1 and not chunked and not self.length
        self.gone = False
        self.timed_out = False
        self.reading = 0
        """The app's reads in progress: while the app reads, nothing is drained behind it (it
        may be listening for the disconnect while it streams)."""

    @property
    def unfinished(self) -> bool:
        """Part of the body is still on its way (the client neither finished nor left)."""
        return not (self.done or self.gone)

    def _note(self, message: Message) -> Message:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.done = self.done or not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.gone = True
        return message

    async def receive(self) -> Message:
        """The app's ``receive``: while the body is unfinished, a read past the deadline raises
        :class:`RequestTimeout`; afterwards (waiting for a disconnect) it never times out."""
        self.reading += 1
        try:
            if not self.unfinished:
                return self._note(await self._receive())
            with anyio.CancelScope(deadline=self.deadline):  # no clock read: it is absolute
                return self._note(await self._receive())
        finally:
            self.reading -= 1
        self.timed_out = True
        raise RequestTimeout(
            "the request body did not arrive in time",
            detail=f"the whole body must arrive within {self.timeout:g} s of the request",
        )

    async def drain(self) -> None:
        """Read and discard the rest of the body, up to ``drain_bytes`` and
        :data:`DRAIN_SECONDS` (never past the deadline); a body that is larger, stalls or
        already timed out is left unfinished."""
        if not self.unfinished or self.timed_out or self.reading:
            return
        if self.length is not None and self.length - self.received > self.drain_bytes:
            return
        limit = self.received + self.drain_bytes
        wait = min(DRAIN_SECONDS, self.deadline - anyio.current_time())
        with anyio.move_on_after(max(wait, 0)):
            while self.unfinished and self.received <= limit:
                self._note(await self._receive())

    async def discard_rest(self) -> None:
        """Discard the body until the client ends it or leaves, however long that takes.

        Only for HTTP/2, before the stream's last frame: Hypercorn 0.18 crashes the connection
        (asyncio) or the whole server (trio) when DATA arrives for a stream whose response has
        ended (``KeyError`` in ``H2Protocol._handle_events``; upstream pgjones/hypercorn#329,
        unfixed).  Holding the stream's end until the request's end is the only way an ASGI
        app can avoid it; the client, not the model, pays for the time.
        """
        while self.unfinished and not self.reading:
            self._note(await self._receive())


class FramingMiddleware:
    """Refuse ambiguous framing, bound the body's arrival, keep connections reusable (see the
    module docstring).  ``context`` is the app's context (for the error layer's mapping)."""

    def __init__(self, app: ASGIApp, context: Any, *, body_timeout: float, drain_bytes: int):
        self.app = app
        self.context = context
        self.body_timeout = body_timeout
        self.drain_bytes = drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = BodyWatch(receive, scope, timeout=self.body_timeout, drain_bytes=self.drain_bytes)
        http1 = body.http1

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and (body.unfinished or body.ambiguous):
                await body.drain()
                if http1 and (body.unfinished or body.ambiguous):
                    headers = [h for h in message.get("headers", ()) if h[0].lower() != CLOSE[0]]
                    message = {**message, "headers": [*headers, CLOSE]}
            elif (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and not http1
                and body.unfinished
            ):
                await body.discard_rest()
            await send(message)

        if body.ambiguous:
            await self._refuse(body, scope, receive, guarded_send)
            return
        await self.app(scope, body.receive, guarded_send)

    async def _refuse(self, body: BodyWatch, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ambiguous framing with 400 and ``Connection: close``, after reading the body as
        h11 framed it (chunked), so that Hypercorn has parsed the request to its end first."""
        await body.drain()
        body.timed_out = True  # never drain more: the rest is whatever the client hid there
        refusal = BadRequest(
            "Content-Length and Transfer-Encoding together are refused",
            detail="send one of them (RFC 9112 section 6.1); the connection is closed",
        )
        try:
            await answer_error(refusal, self.context, scope, receive, send, started=False)
        except Exception as exc:
            # h11 marks the connection must-close as the refusal starts; Hypercorn may then find
            # the bytes after the body (a hidden request) and close the socket while the refusal
            # is being written (trio: BusyResourceError).  The connection closing is the point:
            # nothing of the hidden request is served.
            logger.info("ambiguous framing: connection closed before the 400 (%r)", exc)
