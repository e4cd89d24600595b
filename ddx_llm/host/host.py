"""The model host: one resident model, its state, and safe swaps.

States: ``idle`` (nothing loaded yet) → ``loading`` → ``ready`` or ``failed``.  A swap drains the
old model first (requests already generating finish on it, new ones wait), unloads it, then loads
the new one — so two models are never resident at once — and, once it serves (``load_ms``
taken), lets the backend finish what can wait (``after_load``).  Loads are serialized.  At
shutdown the host drains (:mod:`.drain`): new requests and loads are refused, admitted ones
finish or are cut.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any

import anyio

from .. import events
from ..backend import Backend
from ..errors import LlmError, ModelNotFound, ModelUnavailable
from ..events import RequestInfo
from ..registry import ModelEntry, Registry
from .admission import Admission
from .drain import SETTLE_SECONDS, Drain
from .lease import CLIENT_CLOSED, Lease, Resident

logger = logging.getLogger(__name__)

NOT_REAL_MODE = "server not in real-model mode"


class ModelState(StrEnum):
    IDLE = "idle"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class ModelHost:
    """Owns the resident model of one backend.

    Args:
        backend: the active backend.
        registry: the model registry.
        emit: delivers a lifecycle event (:meth:`ddx_llm.context.AppContext.emit`).
        default_model: registry id loaded by :meth:`start`.
        load_wait_seconds: how long a request waits for a load in progress (then 503).
        admission: the limits on running and waiting requests.

    ``drain`` (a :class:`~ddx_llm.host.drain.Drain`) is its shutdown state.
    """

    def __init__(
        self,
        backend: Backend,
        registry: Registry,
        emit: events.Emit,
        *,
        default_model: str,
        load_wait_seconds: float = 30.0,
        admission: Admission | None = None,
    ) -> None:
        if default_model not in registry:
            raise ModelNotFound(f"default model {default_model!r} is not in the registry")
        self.backend = backend
        self.registry = registry
        self.emit = emit
        self.default_model = default_model
        self.load_wait_seconds = load_wait_seconds
        self.admission = admission or Admission(max_running=8, max_waiting=64, max_queue_seconds=60)
        self.drain = Drain()
        self.state = ModelState.IDLE
        self.target: str | None = None
        self.error: str | None = None
        self.last_load_ms: float | None = None
        self._resident: Resident | None = None
        self._load_started: float | None = None
        self._load_lock = anyio.Lock()
        self._settled = anyio.Event()

    # ------------------------------------------------------------------ state

    @property
    def resident_handle(self) -> Any | None:
        """The backend's handle of the resident model, None when none is resident."""
        return self._resident.handle if self._resident else None

    @property
    def model_id(self) -> str | None:
        """The resident model, or the one being loaded or that failed."""
        return self._resident.entry.id if self._resident else self.target

    def load_elapsed_ms(self) -> float | None:
        """Time spent on the load in progress, else the duration of the last load."""
        if self.state is ModelState.LOADING and self._load_started is not None:
            return round((time.monotonic() - self._load_started) * 1000, 1)
        return self.last_load_ms

    def current(self) -> dict[str, Any]:
        """``/v1/models/current``."""
        return {
            "model_id": self.model_id,
            "loaded": self.state is ModelState.READY,
            "last_load_ms": self.last_load_ms,
        }

    # ------------------------------------------------------------------ loading

    async def start(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the default model; a failure leaves the host ``failed``, never raises.

        With ``task_group.start(host.start)`` the state is ``loading`` before the caller goes on,
        so requests that arrive first wait for the model instead of failing.
        """
        self._begin_load(self.default_model)
        task_status.started()
        try:
            await self.load(self.default_model)
        except LlmError as exc:
            logger.error("default model %s did not load: %s", self.default_model, exc.detail or exc)

    async def load(self, model_id: str) -> dict[str, Any]:
        """Make ``model_id`` the resident model; returns ``{swapped, load_ms, loaded}``.

        Raises ModelNotFound for an unknown id (or any id when the backend has no real models) and
        ModelUnavailable when loading fails (the host is then ``failed``; the service stays up).
        """
        if not self.backend.real_model_mode and self._resident is not None:
            raise ModelNotFound("model loading is not available", detail=NOT_REAL_MODE)
        entry = self.registry.get(model_id)
        if entry is None:
            raise ModelNotFound(f"model {model_id!r} is not in the registry")
        self.drain.refuse_new()
        async with self._load_lock:
            if self._resident and self._resident.entry.id == model_id:
                return {"swapped": False, "load_ms": 0.0, "loaded": True}
            await self._preflight(entry)
            previous = self._resident.entry.id if self._resident else None
            self._begin_load(model_id)
            self.emit(events.ModelLoading(model=model_id, previous=previous))
            try:
                await self._unload_resident()
                handle = await self.backend.load(entry)
            except LlmError as exc:
                self._fail(model_id, str(exc.detail or exc.message))
                raise
            except Exception as exc:
                self._fail(model_id, str(exc) or type(exc).__name__)
                raise ModelUnavailable(
                    f"model {model_id!r} failed to load", detail=str(exc)
                ) from exc
            except BaseException:  # cancelled, e.g. at shutdown: not the model's fault
                self._fail(model_id, "load interrupted")
                raise
            load_ms = self._finish_load(entry, handle)
            await self._after_load(handle)
        swapped = previous is not None
        self.emit(events.ModelLoaded(model=model_id, seconds=load_ms / 1000, swapped=swapped))
        return {"swapped": True, "load_ms": load_ms, "loaded": True}

    async def _preflight(self, entry: ModelEntry) -> None:
        """Let the backend refuse ``entry`` (e.g. too large for the memory) before the resident
        model is drained and unloaded: a refused swap leaves the service as it was."""
        try:
            await self.backend.preflight(entry, self.resident_handle)
        except LlmError as exc:
            error = str(exc.detail or exc.message)
            if self._resident is None:  # nothing else serves (start-up): this load has failed
                self._fail(entry.id, error)
            else:
                logger.error("model %s refused, %s keeps serving: %s", entry.id,
                             self._resident.entry.id, error)  # fmt: skip
            raise

    def _begin_load(self, model_id: str) -> None:
        self.state = ModelState.LOADING
        self.target = model_id
        self.error = None
        self._load_started = time.monotonic()
        if self._settled.is_set():  # else requests already wait on it: keep it
            self._settled = anyio.Event()

    def _finish_load(self, entry: ModelEntry, handle: Any) -> float:
        assert self._load_started is not None
        load_ms = round((time.monotonic() - self._load_started) * 1000, 1)
        self._resident = Resident(entry, handle)
        self.state = ModelState.READY
        self.last_load_ms = load_ms
        self._settled.set()
        logger.info("model %s ready in %.0f ms", entry.id, load_ms)
        return load_ms

    async def _after_load(self, handle: Any) -> None:
        """The backend's work that waits until the new model serves (``load_ms`` is taken):
        before the next load starts, never failing this one."""
        after_load = getattr(self.backend, "after_load", None)  # optional (BackendBase)
        if after_load is None:
            return
        try:
            with anyio.CancelScope(shield=True):
                await after_load(handle)
        except Exception:
            logger.exception("after loading %s", self.model_id)

    def _fail(self, model_id: str, error: str) -> None:
        self.state = ModelState.FAILED
        self.error = error
        self._settled.set()
        logger.error("model %s failed to load: %s", model_id, error)
        self.emit(events.ModelFailed(model=model_id, error=error))

    async def _unload_resident(self) -> None:
        """Wait until no request uses the resident model, then unload it."""
        resident = self._resident
        if resident is None:
            return
        if resident.leases:
            logger.info("draining %d request(s) on %s", resident.leases, resident.entry.id)
            await resident.wait_released()
        self._resident = None
        with anyio.CancelScope(shield=True):
            await self.backend.unload(resident.handle)
        self.emit(events.ModelUnloaded(model=resident.entry.id))

    async def close(self) -> None:
        """At shutdown: cut the requests still running (each ends properly, within
        ``SETTLE_SECONDS``), unload the resident model, then let the backend release the rest."""
        self.drain.cut()
        with anyio.move_on_after(SETTLE_SECONDS):
            await self.admission.wait_idle()
        async with self._load_lock:
            await self._unload_resident()
            self.state = ModelState.IDLE
            await self.backend.close()

    # ------------------------------------------------------------------ serving

    def resolve(self, model_id: str | None) -> ModelEntry:
        """The registry entry a request asks for (None: the resident or default model)."""
        wanted = model_id or self.model_id or self.default_model
        entry = self.registry.get(wanted)
        if entry is None:
            raise ModelNotFound(
                f"model {wanted!r} is not in the registry", detail="GET /v1/models lists the ids"
            )
        return entry

    async def acquire(self, entry: ModelEntry | None, request: RequestInfo) -> Lease:
        """Take the resident model for ``request``: returns the :class:`Lease`, held until its
        ``release()`` (close it in every case).  Waits (bounded) for a generation slot and a
        load in progress; with a free slot and a ready model it does not suspend at all.

        ``entry`` None (the request named no model) takes whichever model is resident once the
        wait is over, so a request that arrives during a swap is served by the new model.
        Raises ModelUnavailable when no model is ready in time or the host drains,
        Overloaded when the queue is full, ModelNotFound when ``entry`` is registered but
        another model is resident (real-model backends serve only that one).  Cancelled while
        waiting, it emits :data:`CLIENT_CLOSED`.
        """
        queued = time.monotonic()
        label = entry.id if entry is not None else (self.model_id or self.default_model)
        self.emit(events.RequestQueued(request, label))
        admission = self.admission
        token: float | None = None
        try:
            self.drain.refuse_new()
            token = admission.try_acquire()
            resident = self._resident
            if token is None or resident is None or self.state is not ModelState.READY:
                with self.drain.cuttable():  # the waits: a slot, then a load in progress
                    if token is None:
                        token = await admission.acquire()
                    resident = await self._ready_resident()
            if entry is None:
                entry = resident.entry
            elif self.backend.real_model_mode and resident.entry.id != entry.id:
                raise ModelNotFound(
                    f"model {entry.id!r} is not loaded",
                    detail=f"the loaded model is {resident.entry.id!r}; "
                    "POST /v1/models/load to switch",
                )
        except BaseException as exc:  # refused, or cancelled while waiting (the client left)
            if token is not None:
                admission.release(token)
            code = exc.code if isinstance(exc, LlmError) else CLIENT_CLOSED
            self.emit(events.RequestRejected(request, label, code))
            raise
        waited = time.monotonic() - queued
        queued_model = label if label != entry.id else None
        self.emit(events.RequestStarted(request, entry.id, waited, queued_model))
        resident.add()
        held = token

        def release() -> None:
            resident.remove()
            admission.release(held)

        return Lease(entry, resident.handle, release)

    @asynccontextmanager
    async def lease(self, entry: ModelEntry | None, request: RequestInfo) -> AsyncIterator[Lease]:
        """Hold the resident model for ``request`` for the block (:meth:`acquire`, then the
        lease's ``release()``); raises what :meth:`acquire` raises."""
        held = await self.acquire(entry, request)
        try:
            yield held
        finally:
            held.release()

    async def _ready_resident(self) -> Resident:
        if self.state in (ModelState.LOADING, ModelState.IDLE):
            with anyio.move_on_after(self.load_wait_seconds):
                await self._settled.wait()
        if self.state is ModelState.READY and self._resident is not None:
            return self._resident
        if self.state is ModelState.LOADING:
            raise ModelUnavailable(
                f"model {self.target!r} is still loading", retry_after=self._retry_after()
            )
        raise ModelUnavailable(
            "no model is ready",
            detail=self.error or f"model state is {self.state.value}",
            retry_after=self._retry_after(),
        )

    def _retry_after(self) -> int:
        return max(1, math.ceil((self.last_load_ms or 5000) / 1000))
