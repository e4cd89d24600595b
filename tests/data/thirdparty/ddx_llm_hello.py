"""``ddx-llm-hello``: an example third-party ddx-llm plugin, distributed on its own.

Registered through the ``ddx_llm`` entry-point group (see ``pyproject.toml``), it uses four hooks:

- ``ddx_llm_settings``: its ``[hello]`` section (``greeting``; env ``DDX_LLM_HELLO_GREETING``);
- ``ddx_llm_routes``: ``GET /hello`` answers ``{"greeting": ..., "chats_done": {...}}``;
- ``ddx_llm_middleware``: every HTTP response carries ``X-Hello: <greeting>`` (order 250, between
  cors and metrics, so CORS-exposed error responses carry it too);
- ``ddx_llm_observe``: counts finished chat requests by finish reason.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings
from ddx_llm.events import Event, RequestDone
from ddx_llm.middleware import MiddlewareSpec

CHATS_DONE: Counter[str] = Counter()
"""Finished chat requests of this process by finish reason."""


class HelloSettings(SectionSettings):
    """``[hello]``: the greeting to answer with."""

    greeting: str = "hello"


class HelloHeader:
    """Add ``X-Hello`` to every HTTP response."""

    def __init__(self, app: ASGIApp, greeting: str) -> None:
        self.app = app
        self.header = (b"x-hello", greeting.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return ("hello", HelloSettings)


@hookimpl
def ddx_llm_routes(settings: Any) -> list[Route]:
    greeting = settings.section("hello").greeting

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"greeting": greeting, "chats_done": dict(CHATS_DONE)})

    return [Route("/hello", hello, methods=["GET"])]


@hookimpl
def ddx_llm_middleware(settings: Any) -> MiddlewareSpec:
    greeting = settings.section("hello").greeting
    return MiddlewareSpec("hello", 250, lambda app: HelloHeader(app, greeting))


@hookimpl
def ddx_llm_observe(event: Event) -> None:
    if isinstance(event, RequestDone):
        CHATS_DONE[event.finish_reason] += 1
