"""The ``metrics`` plugin: Prometheus metrics at ``GET /metrics``.

- HTTP series from a pure-ASGI middleware (order 300: inside CORS, outside errors, so error
  responses are counted with the status the client got): ``ddx_llm_requests_total{route,method,
  status}``, ``ddx_llm_request_duration_seconds{route,method}``, ``ddx_llm_requests_in_flight``.
- LLM series, named after vLLM's with the ``ddx_llm_`` prefix, learnt only from the core's
  ``ddx_llm_observe`` events (see :mod:`ddx_llm.plugins.metrics_collector`).
- The exposition is a plain Starlette ``Route`` (no Mount, so no slash redirect) in the Prometheus
  text format, or OpenMetrics when the scraper asks for it; ``[metrics] path`` moves it.
- ``PROMETHEUS_MULTIPROC_DIR`` switches prometheus-client's multiprocess mode on, for several
  Hypercorn workers: every worker's numbers are merged into each scrape.

Disable with ``disabled_plugins = ["metrics"]``: no middleware, and ``/metrics`` answers 404.
prometheus-client is imported only when the plugin builds its parts.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, PositiveFloat, PrivateAttr, field_validator
from pydantic_settings import NoDecode

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from ddx_llm.config import Settings
    from ddx_llm.middleware import MiddlewareSpec

    from .metrics_collector import MetricsCollector

ORDER = 300
SECTION = "metrics"

DEFAULT_DURATION_BUCKETS = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
]  # fmt: skip


def _split_floats(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class MetricsSettings(SectionSettings):
    """``[metrics]``: where the exposition is served and the HTTP duration buckets."""

    path: str = "/metrics"
    """Path of the exposition route (``DDX_LLM_METRICS_PATH``)."""
    request_duration_buckets: Annotated[
        list[PositiveFloat], NoDecode, BeforeValidator(_split_floats)
    ] = DEFAULT_DURATION_BUCKETS
    """Upper bounds in seconds of ``ddx_llm_request_duration_seconds`` (comma-separated in
    ``DDX_LLM_METRICS_REQUEST_DURATION_BUCKETS``)."""

    _collector: Any = PrivateAttr(default=None)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value != value.strip() or len(value) < 2:
            raise ValueError("must be an absolute path such as /metrics")
        return value

    @field_validator("request_duration_buckets")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if not value or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("must be a non-empty, strictly increasing list of seconds")
        return value


def collector_for(settings: Settings) -> MetricsCollector:
    """The app's collector, made on first use and kept with the app's own ``[metrics]``
    settings, so every hook of one app shares it and no two apps do."""
    section: MetricsSettings = settings.section(SECTION)
    if section._collector is None:
        from .metrics_collector import MetricsCollector

        section._collector = MetricsCollector(
            (entry.id for entry in settings.registry), section.request_duration_buckets
        )
    return section._collector


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (SECTION, MetricsSettings)


@hookimpl
def ddx_llm_middleware(settings: Settings) -> MiddlewareSpec:
    from ddx_llm.middleware import MiddlewareSpec

    from .metrics_http import MetricsMiddleware

    collector = collector_for(settings)
    return MiddlewareSpec("metrics", ORDER, lambda app: MetricsMiddleware(app, collector))


@hookimpl
def ddx_llm_routes(settings: Settings) -> list[BaseRoute]:
    import anyio
    from prometheus_client.exposition import choose_encoder
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    collector = collector_for(settings)

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        if collector.multiprocess_dir:  # reads one file per worker: off the event loop
            body = await anyio.to_thread.run_sync(collector.render, encoder)
        else:
            body = collector.render(encoder)
        return Response(body, media_type=content_type)

    return [Route(settings.section(SECTION).path, metrics, methods=["GET"], name="metrics")]


@hookimpl
def ddx_llm_lifespan(settings: Settings, context: Any) -> Any:
    return collector_for(settings).observing(context.pm)


@hookimpl
def ddx_llm_openapi(document: dict[str, Any], settings: Settings) -> None:
    text = {"schema": {"type": "string"}}
    document["paths"][settings.section(SECTION).path] = {
        "get": {
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "tags": ["monitoring"],
            "description": "Prometheus text exposition (OpenMetrics when the `Accept` header "
            "asks for `application/openmetrics-text`).",
            "responses": {
                "200": {
                    "description": "The current metrics",
                    "content": {
                        "text/plain": text,
                        "application/openmetrics-text": text,
                    },
                }
            },
        }
    }
