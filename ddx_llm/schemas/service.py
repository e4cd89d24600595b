"""The schemas of ddx-llm's own routes: errors, the model registry and swaps, health."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .chat import Omitted


class OpenAIErrorEnvelope(BaseModel):
    """The same error in OpenAI's shape, for the OpenAI SDKs."""

    message: str
    type: str
    code: str
    param: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response: ``code``, ``message``, optional ``detail``; ``error``
    repeats them in OpenAI's envelope."""

    code: str
    message: str
    detail: Any = Omitted()
    error: OpenAIErrorEnvelope


class StreamError(BaseModel):
    """An in-band error event of a chat stream (``data: {"error": {...}}``), sent when
    generation fails after the 200 and its headers went out; ``data: [DONE]`` follows."""

    error: ErrorBody


class ModelCard(BaseModel):
    """A ``/v1/models`` entry: OpenAI's model object plus the registry extras."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    family: str
    arch: str
    total_params_b: float
    quantization: str
    context_window: int
    multimodal: bool
    label: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CurrentModel(BaseModel):
    model_id: str | None
    loaded: bool
    last_load_ms: float | None


class LoadRequest(BaseModel):
    """``POST /v1/models/load``; validated strictly, like every request (see
    :mod:`ddx_llm.schemas.request`)."""

    model_config = ConfigDict(strict=True)

    model_id: str = Field(min_length=1)


class LoadResult(BaseModel):
    swapped: bool
    load_ms: float
    loaded: bool = True


class Draining(BaseModel):
    """``/health`` → ``draining``: the server is shutting down (SIGTERM under ddx-llm serve)."""

    seconds_left: float | None = Field(description="Until in-flight requests are cut")
    cut: bool = Field(description="The drain timeout ran out: what still runs is being cut")


class Health(BaseModel):
    """``/health``: always HTTP 200; plugins may add fields."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "loading", "degraded"]
    model: str | None
    model_state: Literal["idle", "loading", "ready", "failed"]
    model_load_elapsed_ms: float | None
    model_load_progress: float | None = Omitted(
        ge=0,
        le=1,
        description="While model_state is loading: how far the load is, 0 to 1, when the "
        "backend can measure it (mlx: the bundled model's conversion, then the weights)",
    )
    model_error: str | None = Omitted()
    backend: str
    requests: dict[str, int] = Field(
        description="Requests generating (running) and queued (waiting)"
    )
    reasons: list[str] | None = Omitted()
    draining: Draining | None = Omitted(description="Present while the server shuts down")


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(default_factory=list)
