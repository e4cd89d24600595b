"""Lifecycle facts the core emits through the ``ddx_llm_observe`` hook.

The core states what happened; plugins (metrics, usage accounting, audit logs, tracing) decide
what to do with it.  Times are in seconds; ``model`` is a registry id.

Every request-scoped event carries ``request``, a :class:`RequestInfo`: the request id, the
client identity, the method, the route template and the API surface.  These are fields of the
event, not context variables, so an observer reads the same values whatever thread or task
produced the event.  Every request that reaches the model host ends with exactly one
:class:`RequestRejected` (turned away before generating) or one :class:`RequestDone` (whatever
happened then: ``finish_reason`` is ``cancelled`` when the client left, ``error`` on failure).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.types import Scope

from .routing import matched_route

logger = logging.getLogger(__name__)

REQUEST_ID = "request_id"
CLIENT_ID = "client_id"
"""Keys of ``scope["state"]``: the request id (set by the ``request_id`` plugin, else by the
core when a request reaches the model host) and the client identity (set by an authenticating
plugin such as ``auth``: a key's configured name, or ``key-`` + 8 hex digits of its SHA-256)."""


@dataclass(frozen=True)
class RequestInfo:
    """Which request an event belongs to.

    Attributes:
        id: the request id, as in the ``X-Request-ID`` response header.
        client: the client identity an authenticating plugin recognised, else None.
        method: the HTTP method.
        route: the route template (``/v1/chat/completions``).
        surface: the API surface (``chat.completions``), as the route declares it.
    """

    id: str
    client: str | None
    method: str
    route: str
    surface: str | None

    @classmethod
    def from_scope(cls, scope: Scope) -> RequestInfo:
        """The request behind ``scope``; gives it a request id when it has none yet."""
        state = scope.setdefault("state", {})
        request_id = state.get(REQUEST_ID)
        if request_id is None:
            request_id = state[REQUEST_ID] = uuid.uuid4().hex
        route = matched_route(scope)
        return cls(request_id, state.get(CLIENT_ID), scope["method"], route.template, route.surface)


@dataclass(frozen=True)
class Event:
    """Base of every observation."""


Emit = Callable[[Event], None]
"""Delivers one event to the observers (:meth:`ddx_llm.context.AppContext.emit`)."""


@dataclass(frozen=True)
class RequestEvent(Event):
    """Base of the events of one request."""

    request: RequestInfo
    model: str


@dataclass(frozen=True)
class RequestQueued(RequestEvent):
    """The request was accepted and waits for the model (admission, a load in progress)."""


@dataclass(frozen=True)
class RequestStarted(RequestEvent):
    """The request got the model and generation begins."""

    queue_seconds: float
    queued_model: str | None = None
    """The model the request was counted as waiting for, when not ``model``: it named no model
    and a swap finished while it waited."""


@dataclass(frozen=True)
class RequestRejected(RequestEvent):
    """The request was turned away before generating (``code`` of the error it got)."""

    code: str


@dataclass(frozen=True)
class FirstToken(RequestEvent):
    seconds: float
    """Time from the start of the request to its first generated token."""


@dataclass(frozen=True)
class TokensGenerated(RequestEvent):
    count: int
    seconds: float
    """Time since the previous generated piece (inter-token latency over ``count`` tokens)."""


@dataclass(frozen=True)
class RequestDone(RequestEvent):
    finish_reason: str
    """``stop``, ``length``, ``tool_calls``, ``cancelled`` (client left) or ``error``."""
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    """End-to-end time from the start of the request."""


@dataclass(frozen=True)
class ModelLoading(Event):
    model: str
    previous: str | None


@dataclass(frozen=True)
class ModelLoaded(Event):
    model: str
    seconds: float
    swapped: bool


@dataclass(frozen=True)
class ModelFailed(Event):
    model: str
    error: str


@dataclass(frozen=True)
class ModelUnloaded(Event):
    model: str


class TokenClock:
    """Times one generation's tokens: :class:`FirstToken` for the first generated piece,
    :class:`TokensGenerated` for each later one; :meth:`done` gives its :class:`RequestDone`."""

    def __init__(
        self, emit: Emit, request: RequestInfo, model: str, started: float, *, each: bool = True
    ) -> None:
        self.emit = emit
        self.each = each
        """Emit :class:`TokensGenerated` (False when no observer takes it)."""
        self.request = request
        self.model = model
        self.started = started
        self.generated = 0
        self._last: float | None = None

    def tokens(self, count: int) -> None:
        """Record ``count`` newly generated tokens (a piece of output)."""
        now = time.monotonic()
        self.generated += count
        if self._last is None:
            self.emit(FirstToken(self.request, self.model, seconds=now - self.started))
        elif self.each:
            self.emit(TokensGenerated(self.request, self.model, count, now - self._last))
        self._last = now

    def done(
        self, finish_reason: str, prompt_tokens: int, completion_tokens: int | None = None
    ) -> RequestDone:
        """The request's end; ``completion_tokens`` defaults to the tokens recorded."""
        return RequestDone(
            self.request,
            self.model,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=self.generated if completion_tokens is None else completion_tokens,
            seconds=time.monotonic() - self.started,
        )


def observes(*kinds: type[Event]) -> Callable[[F], F]:
    """Declare the event types a ``ddx_llm_observe`` implementation takes (their subclasses
    included); it is not called for others.  An observer that takes only ``RequestDone`` then
    costs nothing per generated token::

        @hookimpl
        @observes(RequestDone)
        def ddx_llm_observe(event, app): ...

    Undeclared, an implementation gets every event."""
    if not kinds or not all(isinstance(k, type) and issubclass(k, Event) for k in kinds):
        raise TypeError(f"observes() takes event classes of ddx_llm.events; got {kinds!r}")

    def mark(function: F) -> F:
        function.ddx_llm_observes = kinds  # type: ignore[attr-defined]
        return function

    return mark


class Observers:
    """Delivers one app's events to its ``ddx_llm_observe`` implementations.

    Which implementations take an event type, and how each is called (which of ``event`` and
    ``app`` it takes), is worked out at the first event of that type, not per event: events
    come several times per request.  The implementations are those registered when the app
    was built, as for every other hook."""

    def __init__(self, hook: Any, app: Any) -> None:
        self._hook = hook
        self._app = app
        self._calls: dict[type[Event], list[_Call]] = {}

    def takes(self, kind: type[Event]) -> bool:
        """Whether any implementation takes events of ``kind`` (an event nobody takes need
        not be made)."""
        return bool(self._calls_for(kind))

    def deliver(self, event: Event) -> None:
        """Give ``event`` to every implementation that takes it; an observer's exception is
        logged, never raised, and never keeps the event from the others (a plain hook call
        stops at the first exception)."""
        for function, takes, plugin in self._calls_for(type(event)):
            try:
                if takes is BOTH:
                    function(event, self._app)
                elif takes is EVENT:
                    function(event)
                else:
                    arguments = {"event": event, "app": self._app}
                    function(**{name: arguments[name] for name in takes})
            except Exception:
                logger.exception("observer %s raised on %s; ignored", plugin, type(event).__name__)

    def _calls_for(self, kind: type[Event]) -> list[_Call]:
        """The calls for events of ``kind``, planned at the first (an empty plan included)."""
        calls = self._calls.get(kind)
        return self._plan(kind) if calls is None else calls

    def _plan(self, kind: type[Event]) -> list[_Call]:
        calls = self._calls[kind] = [
            _call_plan(impl)
            for impl in self._hook.ddx_llm_observe.get_hookimpls()
            if issubclass(kind, getattr(impl.function, "ddx_llm_observes", (Event,)))
        ]
        return calls


F = TypeVar("F", bound=Callable[..., Any])
_Call = tuple[Callable[..., Any], tuple[str, ...], str]
BOTH = ("event", "app")
EVENT = ("event",)


def _call_plan(impl: Any) -> tuple[Callable[..., Any], tuple[str, ...], str]:
    """``(function, argument names, plugin name)``; the names are BOTH or EVENT themselves
    when they say so, for an identity check per call."""
    names = tuple(impl.argnames)
    takes = BOTH if names == BOTH else EVENT if names == EVENT else names
    return impl.function, takes, impl.plugin_name
