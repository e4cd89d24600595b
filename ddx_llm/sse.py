"""Server-sent events: stream chunks, end with ``[DONE]``, stop when the client leaves.

:class:`EventStreamResponse` runs the body and a disconnect listener in one anyio task group (as
Starlette's ``StreamingResponse`` does, but on anyio so it works on trio), and always
``aclose()``s its source — whether the stream ended, failed, or the client disconnected — so the
backend's ``finally`` runs and no generation is left running.  A stream cut mid-way — by the
drain at shutdown (an error its source raises) or by the server cancelling it (Hypercorn's own
``graceful_timeout``) — still ends with an in-band error event and ``[DONE]``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from .errors import ModelUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"
CUT_SEND_SECONDS = 1.0
"""How long a stream that the server cancels may take to send its error event and ``[DONE]``."""
HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def encode_event(data: BaseModel | dict[str, Any] | str) -> bytes:
    """One ``data: ...\\n\\n`` event; models are serialized with their own JSON rules."""
    if isinstance(data, BaseModel):
        payload = data.model_dump_json()
    elif isinstance(data, dict):
        import json

        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    else:
        payload = data
    return b"data: " + payload.encode() + b"\n\n"


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has disconnected (the request body must already be read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[T]]
) -> tuple[T | None, bool]:
    """Run ``work()`` and cancel it if the client disconnects first.

    Returns ``(result, False)`` when the work finished, ``(None, True)`` when the client left.
    An exception of ``work()`` is raised as it is (not wrapped in an exception group).
    """
    result: T | None = None
    completed = False
    error: Exception | None = None

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await wait_for_disconnect(receive)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            result = await work()
            completed = True  # a disconnect noticed after this point came after the answer
        except Exception as exc:  # raised below, outside the task group that would wrap it
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return (result, False) if completed else (None, True)


class EventStreamResponse:
    """An ASGI response streaming ``source`` as server-sent events, then ``done``.

    Args:
        source: async iterator of events (pydantic models or dicts).  It is ``aclose()``d in
            every case.
        error_event: turns an exception raised by ``source`` mid-stream (or the server's cut)
            into the in-band error event; the stream then ends with ``done``.
        headers: extra response headers.
        encode: one event as bytes (default: OpenAI's ``data: <json>\n\n``; an API with
            named events writes ``event:`` lines too).
        done: the last bytes of the body (default ``data: [DONE]``; ``b""`` for none).
        ping_seconds, ping: while nothing was sent for ``ping_seconds``, send ``ping`` (an
            event) — keeps the connection and proxies alive through a long prefill.
    """

    def __init__(
        self,
        source: AsyncIterator[Any],
        *,
        error_event: Callable[[Exception], Any],
        headers: dict[str, str] | None = None,
        encode: Callable[[Any], bytes] = encode_event,
        done: bytes = DONE,
        ping_seconds: float | None = None,
        ping: Any = None,
    ) -> None:
        self.source = source
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
        self._sending = anyio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            _, gone = await run_until_disconnect(receive, lambda: self._stream(send))
        except anyio.get_cancelled_exc_class():  # cancelled by the server: its shutdown timeout
            with anyio.move_on_after(CUT_SEND_SECONDS, shield=True):
                await self._end_cut(send)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self.source.aclose()  # type: ignore[attr-defined]
        self.disconnected = gone and not self.ending
        if self.disconnected:
            logger.info("client disconnected mid-stream; generation closed")

    async def _stream(self, send: Send) -> None:
        self.started = True
        headers = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        self._last_sent = anyio.current_time()
        async with anyio.create_task_group() as tasks:
            if self.ping_seconds:
                tasks.start_soon(self._pinging, send)
            try:
                async for event in self.source:
                    await self._send(send, event)
            except Exception as exc:  # the headers are out: report in-band, as OpenAI does
                await self._send(send, self.error_event(exc))
            tasks.cancel_scope.cancel()
        self.ending = True
        await send({"type": "http.response.body", "body": self.done, "more_body": False})

    async def _send(self, send: Send, event: Any) -> None:
        """Send one event; the lock keeps a ping from going out in the middle of another."""
        body = self.encode(event)
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
