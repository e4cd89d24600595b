"""The backend protocol: what every backend plugin (mock, mlx, ...) provides to the core.

A backend turns a validated chat request into a stream of :class:`Delta` pieces.  The core owns
everything around it — validation, admission, the model lease, the context check, lifecycle
events, and every response shape (ids, chunks, the aggregate completion, SSE) — so a backend
never builds a response body itself and every API surface works on every backend.  The
:class:`ddx_llm.host.ModelHost` calls ``preflight``/``load``/``unload`` and keeps exactly one
model resident; ``/health`` and ``/readyz`` ask the backend through ``status`` and
``not_ready_reason``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .registry import ModelEntry, Registry
    from .schemas import ChatCompletionRequest, TokenLogprob


@dataclass
class ToolCallDelta:
    """A piece of one tool call: the first piece of call ``index`` carries ``id`` and ``name``,
    later pieces append to ``arguments``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Delta:
    """One step of a generation.

    ``content`` is new answer text, ``reasoning`` new text of the model's thinking before it
    answers (a reasoning model's ``<think>`` block: split from the answer by the backend),
    ``tool_calls`` new tool-call pieces, ``logprobs`` the log probabilities of the tokens behind
    this piece (when requested), ``tokens`` how many generated tokens this piece accounts for.
    The last delta of a generation has ``finish_reason`` (``stop``, ``length`` or
    ``tool_calls``) and ``usage`` set.
    """

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    tokens: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class Prompt:
    """A request prepared for generation: its exact (or estimated) token count and whatever the
    backend wants to keep from preparing it (e.g. the token ids)."""

    tokens: int
    data: Any = None


@runtime_checkable
class Backend(Protocol):
    """What a backend plugin's factory returns.  :class:`BackendBase` gives every optional
    member a default; subclass it and write what your backend needs.

    Attributes:
        name: the backend's name as offered through ``ddx_llm_backends``; ``/health`` shows the
            backend's :meth:`status` under this key.
        real_model_mode: False for backends without real models (mock): any registered model id is
            served and ``POST /v1/models/load`` answers 404 "server not in real-model mode".

    ``handle`` below is what :meth:`load` returned; the core keeps it while the model is
    resident and hands it back, so a backend keeps no copy of its own.
    """

    name: str
    real_model_mode: bool

    def default_model(self, registry: Registry) -> str | None:
        """The registry id to load at start-up when conf names none (None: the first entry)."""

    async def preflight(self, entry: ModelEntry, resident: Any | None) -> None:
        """Raise :class:`ddx_llm.errors.ModelUnavailable` when ``entry`` cannot be loaded even
        once ``resident`` (the handle of the model it replaces, or None) is gone, e.g. too large
        for the memory.  Called before the resident model is drained and unloaded, so a
        refused swap leaves the service as it was."""

    async def load(self, entry: ModelEntry) -> Any:
        """Load ``entry`` and return a handle for it, without blocking the event loop.

        Raise :class:`ddx_llm.errors.ModelUnavailable` (with a clear ``detail``) when it cannot
        be loaded; the host then reports the model as failed and the service stays up.
        """

    async def unload(self, handle: Any) -> None:
        """Release the model behind ``handle`` and free its memory: once it returns, the
        model's memory is free for the next load (whether it is given back to the system now
        or in :meth:`after_load` is the backend's call).  Called once, when no request uses it
        any more."""

    async def after_load(self, handle: Any) -> None:
        """Work that can wait until the model just loaded serves, e.g. giving the memory of the
        one it replaced back to the system.  Called once a load has succeeded and been timed
        (``load_ms``), before another load may start; must not raise.  Optional
        (:class:`BackendBase`: nothing)."""

    async def prepare(
        self, handle: Any, entry: ModelEntry, request: ChatCompletionRequest
    ) -> Prompt:
        """Check that the request can be served and count its prompt tokens.

        Raise :class:`ddx_llm.errors.RequestInvalid` naming a parameter the backend cannot honour.
        The core raises ``ContextTooLong`` from the returned count.
        """

    def generate(
        self, handle: Any, entry: ModelEntry, prompt: Prompt, request: ChatCompletionRequest
    ) -> AsyncIterator[Delta]:
        """Generate, yielding :class:`Delta` pieces, the last with ``finish_reason`` and ``usage``.

        Must not block the event loop.  The core closes the iterator (``aclose()``) when the client
        disconnects or the response ends early; the backend must then stop its work promptly
        (put the cleanup in the generator's ``finally``).
        """

    def load_progress(self, entry: ModelEntry) -> float | None:
        """How far the load of ``entry`` in progress is, from 0 to 1, or None when the backend
        cannot tell (yet).  Asked for every ``/health`` request while the host is loading
        ``entry`` (``model_load_progress``), on the event loop: must be fast.  Optional
        (:class:`BackendBase`: None)."""

    def status(self, handle: Any | None) -> dict[str, Any] | None:
        """The backend's own ``/health`` field (shown under :attr:`name`), or None.  ``handle``
        is the resident model's, None when no model is resident.  Called for every ``/health``
        request on the event loop: must be fast."""

    def not_ready_reason(self, handle: Any | None) -> str | None:
        """Why the backend cannot serve although a model is resident (a dead or stalled worker),
        or None.  A reason makes ``/readyz`` 503 and ``/health`` ``degraded``.  Must be fast."""

    async def close(self) -> None:
        """Release what the backend holds beyond its models (threads, connections).  Called
        once at shutdown, after the last model was unloaded."""


class BackendBase:
    """Defaults for the optional members of :class:`Backend`: no preferred model, no
    preflight, nothing after a load, no load progress, no ``/health`` field, always ready,
    nothing to close."""

    name: str
    real_model_mode: bool = True

    def default_model(self, registry: Registry) -> str | None:
        return None

    async def preflight(self, entry: ModelEntry, resident: Any | None) -> None:
        return None

    async def after_load(self, handle: Any) -> None:
        return None

    def load_progress(self, entry: ModelEntry) -> float | None:
        return None

    def status(self, handle: Any | None) -> dict[str, Any] | None:
        return None

    def not_ready_reason(self, handle: Any | None) -> str | None:
        return None

    async def close(self) -> None:
        return None


BACKEND_MEMBERS = (
    "name", "real_model_mode", "default_model", "preflight", "load", "unload", "prepare",
    "generate", "status", "not_ready_reason", "close",
)  # fmt: skip


def missing_members(backend: object) -> list[str]:
    """The members of :class:`Backend` that ``backend`` lacks."""
    return [name for name in BACKEND_MEMBERS if not hasattr(backend, name)]


BackendFactory = Callable[[Any], Backend]
"""``factory(app) -> Backend``, offered through ``ddx_llm_backends``; ``app`` is the
:class:`~ddx_llm.context.AppContext` (``app.settings``, ``app.settings.registry``)."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of a text's token count (about four characters a token).

    For backends without a tokenizer (mock); real backends count exactly.
    """
    return math.ceil(len(text) / 4) if text else 0
