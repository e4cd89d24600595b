"""Anthropic's server-sent events: ``event: <type>`` + ``data: <json>``, pings, in-band errors.

The core's :class:`ddx_llm.sse.EventStreamResponse` writes OpenAI's framing (``data:`` only, then
``data: [DONE]``); the Anthropic SDKs dispatch on the ``event:`` name and have no ``[DONE]``, so
this surface has its own response, with the same guarantees: the source is ``aclose()``d in
every case (the generation stops when the client leaves), an error the source raises after the
headers went out becomes an in-band ``event: error`` with Anthropic's error body, and a stream
the server cancels at its shutdown timeout still ends with one.

While no event was sent for ``ping_seconds`` — a long prompt prefill before the first token,
a slow step — an ``event: ping`` keeps the connection (and the proxies on the way) alive.  A
task of its own sends the pings, so waiting for the source is never interrupted by one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from ddx_llm.errors import ModelUnavailable
from ddx_llm.sse import HEADERS, run_until_disconnect

logger = logging.getLogger(__name__)

CUT_SEND_SECONDS = 1.0
PING = {"type": "ping"}


def encode(payload: dict[str, Any]) -> bytes:
    """One named event: its ``type`` is the event name, as Anthropic's streams do."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()


class AnthropicEventStream:
    """An ASGI response streaming ``source`` (pydantic models with a ``type``) as named events.

    Args:
        source: the events; ``aclose()``d in every case.
        error_payload: the ``event: error`` body for an exception of ``source``.
        ping_seconds: idle time after which a ``ping`` is sent.
        headers: extra response headers.
    """

    def __init__(
        self,
        source: AsyncIterator[BaseModel],
        *,
        error_payload: Callable[[Exception], dict[str, Any]],
        ping_seconds: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self.error_payload = error_payload
        self.ping_seconds = ping_seconds
        self.headers = {**HEADERS, **(headers or {})}
        self.started = False
        self.ending = False
        self.disconnected = False
        self.pings = 0
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
            tasks.start_soon(self._ping, send)
            try:
                async for event in self.source:
                    await self._send(send, event.model_dump(mode="json"))
            except Exception as exc:  # the headers are out: report in-band
                await self._send(send, self.error_payload(exc))
            tasks.cancel_scope.cancel()
        self.ending = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, payload: dict[str, Any]) -> None:
        """Send one event; the lock keeps a ping from going out in the middle of another."""
        body = encode(payload)
        async with self._sending:
            await send({"type": "http.response.body", "body": body, "more_body": True})
            self._last_sent = anyio.current_time()

    async def _ping(self, send: Send) -> None:
        """Send a ping whenever nothing was sent for ``ping_seconds``."""
        while True:
            idle = anyio.current_time() - self._last_sent
            if idle < self.ping_seconds:
                await anyio.sleep(self.ping_seconds - idle)
                continue
            with anyio.CancelScope(shield=True):  # never cut an event in half
                await self._send(send, PING)
            self.pings += 1

    async def _end_cut(self, send: Send) -> None:
        """Best effort, once the server cancelled the response: an in-band error event and the
        end of the body, so the client sees why the stream ends."""
        if not self.started or self.ending:
            return
        self.ending = True
        cut = ModelUnavailable(
            "the server is shutting down",
            detail="the stream was cut at the server's shutdown timeout",
            retry_after=1,
        )
        try:
            body = encode(self.error_payload(cut))
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # the connection is gone already: nothing more to tell
            logger.debug("stream cut at shutdown could not be ended", exc_info=True)
