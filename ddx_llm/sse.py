"""Server-sent events: stream chunks, end with ``[DONE]``, stop when the client leaves.

:class:`EventStreamResponse` sends the body while watching for the client leaving
(:func:`~ddx_llm.disconnect.answer_until_disconnect`: anyio, so it works on trio), and always
``aclose()``s its source — whether the stream ended, failed, or the client disconnected — so the
backend's ``finally`` runs and no generation is left running.  A stream cut mid-way — by the
drain at shutdown (an error its source raises) or by the server cancelling it (Hypercorn's own
``graceful_timeout``) — still ends with an in-band error event and ``[DONE]``.
``run_until_disconnect``, ``answer_until_disconnect`` and ``wait_for_disconnect`` are
:mod:`ddx_llm.disconnect`'s, kept importable from here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from .disconnect import answer_until_disconnect, run_until_disconnect, wait_for_disconnect
from .errors import ModelUnavailable

__all__ = [
    "DONE",
    "EventStreamResponse",
    "answer_until_disconnect",
    "encode_event",
    "run_until_disconnect",
    "wait_for_disconnect",
]

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
CUT_SEND_SECONDS = 1.0
"""How long a stream that the server cancels may take to send its error event and ``[DONE]``."""
HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def encode_event(data: BaseModel | dict[str, Any] | str | bytes) -> bytes:
    """One ``data: ...\\n\\n`` event; models are serialized with their own JSON rules, bytes
    are taken as the JSON text already encoded."""
    if isinstance(data, bytes):
        return b"data: " + data + b"\n\n"
    if isinstance(data, BaseModel):
        payload = data.model_dump_json()
    elif isinstance(data, dict):
        import json

        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    else:
        payload = data
    return b"data: " + payload.encode() + b"\n\n"


class EventStreamResponse:
    """An ASGI response streaming ``source`` as server-sent events, then ``done``.

    Args:
        source: async iterator of events (pydantic models, dicts, or bytes of JSON text).  It
            is ``aclose()``d in every case.  None when it is set later, by the ``respond``
            function given to :meth:`answer`.
        error_event: turns an exception raised by ``source`` mid-stream (or the server's cut)
            into the in-band error event; the stream then ends with ``done``.
        headers: extra response headers.
        encode: one event as bytes (default: OpenAI's ``data: <json>\n\n``; an API with
            named events writes ``event:`` lines too).
        done: the last bytes of the body (default ``data: [DONE]``; ``b""`` for none).
        ping_seconds, ping: while nothing was sent for ``ping_seconds``, send ``ping`` (an
            event) — keeps the connection and proxies alive through a long prefill.
        closes: what ``source`` wraps (the generation's deltas), ``aclose()``d after it in every
            case: a source closed before it started (the client left as the headers went out)
            never ran its body, so it never closed what it wraps — and the generation holds
            the model lease and a generation slot until it is closed.
    """

    def __init__(
        self,
        source: AsyncIterator[Any] | None,
        *,
        error_event: Callable[[Exception], Any],
        headers: dict[str, str] | None = None,
        encode: Callable[[Any], bytes] = encode_event,
        done: bytes = DONE,
        ping_seconds: float | None = None,
        ping: Any = None,
        closes: Any = None,
    ) -> None:
        self.source = source
        self.closes = closes
        self.error_event = error_event
        self.headers = {**HEADERS, **(headers or {})}
        self.encode = encode
        self.done = done
        self.ping_seconds = ping_seconds
        self.ping = ping
        self.pings = 0
        self.disconnected = False
        self.started = False
        """The response's headers were sent (or are being sent)."""
        self.ending = False
        """The end of the body is being sent: a disconnect noticed from then on is the normal
        end of the response (trio's Hypercorn reports it while the last send returns), not a
        client leaving mid-stream."""
        self._last_sent = 0.0
        self._sending: anyio.Lock | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(receive, send, self.stream)

    async def answer(
        self, receive: Receive, send: Send, respond: Callable[[Send], Awaitable[None]]
    ) -> bool:
        """Run ``respond(send)`` — whatever must happen before the stream, then
        :meth:`stream` — while watching for the client leaving (:func:`answer_until_disconnect`);
        returns True when the client left before the end.  The source is closed in every case;
        cancelled by the server (its shutdown timeout), a started stream still ends with the
        error event and ``done``."""
        try:
            gone = await answer_until_disconnect(receive, send, respond)
        except anyio.get_cancelled_exc_class():  # cancelled by the server: its shutdown timeout
            with anyio.move_on_after(CUT_SEND_SECONDS, shield=True):
                await self._end_cut(send)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                if self.source is not None:
                    await self.source.aclose()  # type: ignore[attr-defined]
                if self.closes is not None:
                    await self.closes.aclose()
        self.disconnected = gone and self.started and not self.ending
        if self.disconnected:
            logger.info("client disconnected mid-stream; generation closed")
        return gone

    async def stream(self, send: Send, around: AbstractContextManager[Any] | None = None) -> None:
        """Send the headers, every event of the source (an exception becomes the in-band error
        event) and ``done``.  ``around`` is entered around taking and sending the events (the
        drain's :class:`~ddx_llm.host.drain.CutWatch` of the generation behind them)."""
        assert self.source is not None
        self.started = True
        headers = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.ping_seconds:
            self._sending = anyio.Lock()
            self._last_sent = anyio.current_time()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._pinging, send)
                await self._events(send, around)
                tasks.cancel_scope.cancel()
        else:
            await self._events(send, around)
        self.ending = True
        await send({"type": "http.response.body", "body": self.done, "more_body": False})

    async def _events(self, send: Send, around: AbstractContextManager[Any] | None) -> None:
        encode = self.encode
        try:
            with around or nullcontext():
                if self._sending is None:  # no pings: nothing else sends, no lock needed
                    async for event in self.source:  # type: ignore[union-attr]
                        body = encode(event)
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                else:
                    async for event in self.source:  # type: ignore[union-attr]
                        await self._send(send, event)
        except Exception as exc:  # the headers are out: report in-band, as OpenAI does
            await self._send(send, self.error_event(exc))

    async def _send(self, send: Send, event: Any) -> None:
        """Send one event; the lock keeps a ping from going out in the middle of another."""
        body = self.encode(event)
        if self._sending is None:
            await send({"type": "http.response.body", "body": body, "more_body": True})
            return
        async with self._sending:
            await send({"type": "http.response.body", "body": body, "more_body": True})
            self._last_sent = anyio.current_time()

    async def _pinging(self, send: Send) -> None:
        assert self.ping_seconds is not None
        while True:
            idle = anyio.current_time() - self._last_sent
            if idle < self.ping_seconds:
                await anyio.sleep(self.ping_seconds - idle)
                continue
            with anyio.CancelScope(shield=True):  # never cut an event in half
                await self._send(send, self.ping)
            self.pings += 1

    async def _end_cut(self, send: Send) -> None:
        """Best effort, once the server cancelled the response: an in-band error event and the
        end of the body, so the client sees why the stream ends and a proper end of it."""
        if not self.started or self.ending:
            return
        self.ending = True
        cut = ModelUnavailable(
            "the server is shutting down",
            detail="the stream was cut at the server's shutdown timeout",
            retry_after=1,
        )
        try:
            event = self.encode(self.error_event(cut))
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": self.done, "more_body": False})
        except Exception:  # the connection is gone already: nothing more to tell
            logger.debug("stream cut at shutdown could not be ended", exc_info=True)
