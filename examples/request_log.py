"""``request_log``: one JSON line per finished LLM request — a drop-in ddx-llm plugin.

Install: copy this file into the service's drop-in folder (``plugins/`` beside ``conf/``, or
``[core] plugins_dir``) and restart; ``ddx-llm plugins`` lists ``request_log  [dropin …]``.
Switch it off with ``[core] disabled_plugins = ["request_log"]``.

Every request that reached the model host ends with exactly one lifecycle event: ``RequestDone``
(it generated: ``finish_reason`` ``stop``, ``length``, ``tool_calls``, ``cancelled`` when the
client left, ``error``) or ``RequestRejected`` (turned away before generating, e.g.
``overloaded``).  Each becomes one line::

    {"time": "2025-01-31T12:00:00.123Z", "request_id": "4b1c…", "client": "alice",
     "method": "POST", "route": "/v1/chat/completions", "surface": "chat.completions",
     "model": "mlx-community/Qwen3-4B-Instruct-2507-4bit", "outcome": "done",
     "finish_reason": "stop", "prompt_tokens": 12, "completion_tokens": 30,
     "total_tokens": 42, "latency_ms": 812.4}

``request_id`` is the ``X-Request-ID`` response header; ``client`` the identity the ``auth``
plugin recognised (a key's name or ``key-<8 hex>``), null without one.  A rejected request has
``"outcome": "rejected"``, its error ``code`` and no token or latency fields.  Requests refused
before they reach the model host (a 401, an invalid body, the 429 of a rate or budget limit)
produce no event, hence no line: the access log has them.

``[request_log]`` (each key also read from ``DDX_LLM_REQUEST_LOG_<KEY>``):

- ``logger`` (default ``ddx_llm.request_log``): the logger the lines go to, at INFO; ``""``:
  none.  Its records carry ``request_id`` like the service's own and propagate as usual, so by
  default the lines appear in the service log; with a ``file``, set ``logger = ""`` unless you
  want them in both places.
- ``file`` (default ``""``, none): a file the lines are appended to, one JSON object per line;
  relative to the project folder (the parent of ``conf/``); its folder is created.
- ``surfaces`` (default ``[]``, every one): log only these API surfaces
  (``["chat.completions"]``; comma-separated in the variable).

At least one of ``logger`` and ``file`` must be set: start-up says so otherwise.

Never blocking the event loop: the observer only formats the line and puts a log record on a
queue; a ``QueueListener`` thread, started and stopped by the plugin's lifespan, writes the file
and hands the record to the logger's handlers (which may themselves do I/O).  The file is opened
with ``WatchedFileHandler``, so ``logrotate`` may move it away: the next line reopens it.  Several
Hypercorn workers may share one file: each appends every line with a single write.  Lines
of events arriving while the listener is not running (outside the app's lifespan) are dropped.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
from pydantic import model_validator

from ddx_llm import hookimpl
from ddx_llm.config import CommaList, SectionSettings
from ddx_llm.context import AppContext
from ddx_llm.events import Event, RequestDone, RequestEvent, RequestRejected

SECTION = "request_log"


class RequestLogSettings(SectionSettings):
    """``[request_log]``: where the lines go."""

    logger: str = "ddx_llm.request_log"
    """Logger name for the lines (INFO); empty: no logger."""
    file: str = ""
    """File the lines are appended to (relative paths: to the project folder); empty: no file."""
    surfaces: CommaList = []
    """API surfaces logged; empty: every surface."""

    @model_validator(mode="after")
    def _somewhere(self) -> RequestLogSettings:
        if not self.logger and not self.file:
            raise ValueError("logger and file are both empty: the lines would go nowhere")
        return self


def line(event: RequestEvent) -> str:
    """The JSON line of a ``RequestDone`` or ``RequestRejected`` event."""
    request = event.request
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": request.id,
        "client": request.client,
        "method": request.method,
        "route": request.route,
        "surface": request.surface,
        "model": event.model,
    }
    if isinstance(event, RequestDone):
        record.update(
            outcome="done",
            finish_reason=event.finish_reason,
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            total_tokens=event.prompt_tokens + event.completion_tokens,
            latency_ms=round(event.seconds * 1000, 1),
        )
    elif isinstance(event, RequestRejected):
        record.update(outcome="rejected", code=event.code)
    return json.dumps(record, ensure_ascii=False)


class ForwardToLogger(logging.Handler):
    """Hands records to a logger's own handlers (in the listener's thread), honouring its
    level and ``propagate`` as a record logged there would."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.target = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        if self.target.isEnabledFor(record.levelno):
            self.target.handle(record)


class RequestLog:
    """This app's log: a queue the observer fills and a listener thread that drains it."""

    def __init__(self, settings: RequestLogSettings, file: Path | None) -> None:
        self.settings = settings
        self.file = file
        self.surfaces = frozenset(settings.surfaces)
        self.queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.listener: logging.handlers.QueueListener | None = None

    def wants(self, event: Event) -> bool:
        return isinstance(event, RequestDone | RequestRejected) and (
            not self.surfaces or event.request.surface in self.surfaces
        )

    def put(self, event: RequestEvent) -> None:
        """Queue the event's line (never blocks; dropped when the listener is not running)."""
        if self.listener is None:
            return
        record = logging.LogRecord(
            self.settings.logger or SECTION, logging.INFO, __file__, 0, line(event), None, None
        )
        record.request_id = event.request.id  # as the service's own records carry it
        self.queue.put_nowait(record)

    def _handlers(self) -> list[logging.Handler]:
        """Made in a worker thread: opening the file is I/O."""
        handlers: list[logging.Handler] = []
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            to_file = logging.handlers.WatchedFileHandler(self.file, encoding="utf-8")
            to_file.setFormatter(logging.Formatter("%(message)s"))
            handlers.append(to_file)
        if self.settings.logger:
            handlers.append(ForwardToLogger(self.settings.logger))
        return handlers

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The listener thread, for the app's lifetime; stopping it writes what is queued."""
        handlers = await anyio.to_thread.run_sync(self._handlers)
        listener = logging.handlers.QueueListener(self.queue, *handlers)
        listener.start()
        self.listener = listener
        try:
            yield
        finally:
            self.listener = None
            await anyio.to_thread.run_sync(listener.stop)  # joins the thread after the last line
            for handler in handlers:
                await anyio.to_thread.run_sync(handler.close)


def request_log(app: AppContext) -> RequestLog:
    """This app's :class:`RequestLog`, made from its settings on first use."""

    def create() -> RequestLog:
        settings = app.settings.section(SECTION)
        file = app.settings.resolve_path(settings.file) if settings.file else None
        return RequestLog(settings, file)

    return app.state(SECTION, create)


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (SECTION, RequestLogSettings)


@hookimpl
def ddx_llm_lifespan(app: AppContext):
    return request_log(app).running()


@hookimpl
def ddx_llm_observe(event: Event, app: AppContext) -> None:
    log = request_log(app)
    if log.wants(event):
        log.put(event)  # type: ignore[arg-type]
