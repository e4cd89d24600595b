"""The ``request_id`` plugin: every request gets an id that its response and log lines carry.

Its middleware (order 100, outermost) picks the id on the way *in*: the client's value of the
request-id header when it is well-formed (1-128 characters of ``A-Z a-z 0-9 . _ : -``), else a
fresh ``uuid4`` hex.  The id is then

- in ``scope["state"]["request_id"]`` (``request.state.request_id`` for handlers and plugins),
- in :data:`current_request_id`, a context variable, for code that has no scope,
- on every log record created while the request runs (``record.request_id``, ``"-"`` outside a
  request), through a log-record factory installed at start-up,
- on every response, error responses and streams included, under the same header name.

Settings (``[request_id]``): ``header`` (``DDX_LLM_REQUEST_ID_HEADER``), default ``X-Request-ID``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings
from ddx_llm.events import REQUEST_ID
from ddx_llm.middleware import MiddlewareSpec

ORDER = 100
DEFAULT_HEADER = "X-Request-ID"
WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""A client-supplied id is echoed only if it matches this (no spaces, quotes or control bytes,
so it is safe in headers and log lines)."""
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name (RFC 9110 ``token``)."""
NO_REQUEST = "-"

current_request_id: ContextVar[str | None] = ContextVar("ddx_llm_request_id", default=None)
"""The id of the request being served in this context (None outside a request)."""


class RequestIdSettings(SectionSettings):
    """``[request_id]``: the header that carries the id, both ways."""

    header: str = DEFAULT_HEADER

    @field_validator("header")
    @classmethod
    def _field_name(cls, value: str) -> str:
        if not HEADER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid HTTP header name")
        return value


def choose_request_id(presented: str | None) -> str:
    """The client's id when well-formed, else a fresh one."""
    if presented is not None and WELL_FORMED.fullmatch(presented):
        return presented
    return fresh_id()


def fresh_id() -> str:
    """A random (version 4) UUID as 32 hex digits: ``uuid.uuid4().hex`` without building the
    ``UUID`` object (a third of the time, on every request)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


class RequestIdMiddleware:
    """Choose the request id, expose it to the request, and add it to the response headers."""

    def __init__(self, app: ASGIApp, header: str = DEFAULT_HEADER) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = self.header
        presented = None
        for key, value in scope["headers"]:
            if key == header:
                presented = value.decode("latin-1")
                break
        request_id = choose_request_id(presented)
        scope.setdefault("state", {})[REQUEST_ID] = request_id
        ours = (header, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                # the app's list is left as it is: one copy with ours last, any other removed
                if any(k.lower() == header for k, _ in headers):
                    headers = [(k, v) for k, v in headers if k.lower() != header]
                message = {**message, "headers": [*headers, ours]}
            await send(message)

        token = current_request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


def install_log_record_factory() -> None:
    """Make every log record carry ``request_id`` (idempotent; process-wide).

    A record factory, unlike a filter, reaches records of every logger (ours, Hypercorn's,
    libraries') without knowing which handlers exist.  Formats show it with ``%(request_id)s``.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = current_request_id.get() or NO_REQUEST
        return record

    factory.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return "request_id", RequestIdSettings


@hookimpl
def ddx_llm_middleware(settings: Any) -> MiddlewareSpec:
    header = settings.section("request_id").header
    return MiddlewareSpec("request_id", ORDER, lambda app: RequestIdMiddleware(app, header))


@hookimpl
def ddx_llm_lifespan() -> Any:
    return _log_ids()


@asynccontextmanager
async def _log_ids() -> AsyncIterator[None]:
    install_log_record_factory()
    yield
