"""``/health`` (always 200, the service's state) and ``/readyz`` (200 or 503, for balancers).

While the process drains at shutdown, ``/readyz`` answers 503 and ``/health`` is ``degraded``
with the reason first and a ``draining`` field ``{seconds_left, cut}``.  While a model loads,
``model_load_progress`` says how far (0 to 1) when the backend can measure it
(``Backend.load_progress``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..host import ModelState

if TYPE_CHECKING:
    from ..context import AppContext

HEALTH_STATUS = {ModelState.READY: "ok", ModelState.LOADING: "loading"}
"""Model state → ``/health`` status; anything else (idle, failed) is ``degraded``."""
DRAINING = "draining: the server is shutting down"


def reasons_of(app: AppContext) -> list[str]:
    """Why the service is not ready besides its model's state: draining first, then the
    backend's and the plugins' reasons."""
    reasons = app.not_ready_reasons()
    if app.host.drain.draining:
        reasons.insert(0, DRAINING)
    return reasons


def load_progress(app: AppContext) -> float | None:
    """The backend's measure of the load in progress (clamped to 0..1), None when no load is
    under way or the backend cannot tell.  Backends that do not subclass ``BackendBase`` may
    lack the (optional) method."""
    host = app.host
    entry = host.registry.get(host.target) if host.target else None
    measure = getattr(app.backend, "load_progress", None)
    if host.state is not ModelState.LOADING or entry is None or measure is None:
        return None
    fraction = measure(entry)
    return None if fraction is None else min(1.0, max(0.0, float(fraction)))


def health_body(app: AppContext) -> dict[str, Any]:
    """The ``/health`` document: core fields, readiness reasons, the backend's own field
    (under its name), then plugin extras."""
    host = app.host
    reasons = reasons_of(app)
    status = HEALTH_STATUS.get(host.state, "degraded")
    if reasons and status == "ok":
        status = "degraded"
    body: dict[str, Any] = {
        "status": status,
        "model": host.model_id,
        "model_state": host.state.value,
        "model_load_elapsed_ms": host.load_elapsed_ms(),
        "backend": app.backend.name,
        "requests": {"running": host.admission.running, "waiting": host.admission.waiting},
    }
    progress = load_progress(app)
    if progress is not None:
        body["model_load_progress"] = progress
    if host.error:
        body["model_error"] = host.error
    if reasons:
        body["reasons"] = reasons
    if host.drain.draining:
        body["draining"] = host.drain.status()
    backend_status = app.backend.status(host.resident_handle)
    if backend_status is not None:
        body.setdefault(app.backend.name, backend_status)
    for extra in app.hook.ddx_llm_health(app=app, host=host):
        for key, value in (extra or {}).items():
            body.setdefault(key, value)
    return body


async def health(request: Request) -> JSONResponse:
    return JSONResponse(health_body(request.app.context))


async def readyz(request: Request) -> JSONResponse:
    app: AppContext = request.app.context
    reasons = reasons_of(app)
    if app.host.state is not ModelState.READY:
        reasons.insert(0, f"model state is {app.host.state.value}")
    return JSONResponse(
        {"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200
    )
