"""The ``metrics`` plugin: Prometheus metrics at ``GET /metrics``.

- HTTP series from a pure-ASGI middleware (:mod:`.http`; inside CORS, outside the core's error
  layer, so error responses are counted with the status the client got):
  ``ddx_llm_requests_total{route,method,status}``,
  ``ddx_llm_request_duration_seconds{route,method}``, ``ddx_llm_requests_in_flight``.
- LLM series, named after vLLM's with the ``ddx_llm_`` prefix, learnt only from the core's
  lifecycle events through ``ddx_llm_observe`` (:mod:`.series`).
- Scrape-time series (:mod:`.scraped`): the KV-cache usage and the prompt cache, read from the
  backend's status and the model host at each scrape; with ``[metrics] vllm_names`` also
  ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and
  ``vllm:kv_cache_usage_perc``, the names the Gateway API Inference Extension's endpoint
  picker (and llm-d's) reads.
- The exposition (:mod:`.exposition`) in the Prometheus text format, or OpenMetrics when the
  scraper asks for it; ``[metrics] path`` moves it.
- ``PROMETHEUS_MULTIPROC_DIR`` switches prometheus-client's multiprocess mode on, for several
  Hypercorn workers: every worker's numbers are merged into each scrape.

Each app has its own collector, kept with ``app.state("metrics", ...)``.  Disable with
``disabled_plugins = ["metrics"]``: no middleware, and ``/metrics`` answers 404.
prometheus-client is imported only when the plugin builds its parts.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, PositiveFloat, field_validator
from pydantic_settings import NoDecode

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from ddx_llm.context import AppContext
    from ddx_llm.events import Event
    from ddx_llm.middleware import MiddlewareSpec

    from .scraped import ScrapedSeries
    from .series import MetricsCollector

ORDER = 300
"""Inside cors (200), outside the core's error layer (400): counts the status the client got."""
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
    vllm_names: bool = False
    """Also expose the queue and KV-cache series under vLLM's names, for inference gateways
    (``DDX_LLM_METRICS_VLLM_NAMES``)."""

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


def collector_of(app: AppContext) -> MetricsCollector:
    """This app's collector, made on first use."""

    def create() -> MetricsCollector:
        from .series import MetricsCollector

        section: MetricsSettings = app.settings.section(SECTION)
        model_ids = (entry.id for entry in app.settings.registry)
        return MetricsCollector(model_ids, section.request_duration_buckets)

    return app.state(SECTION, create)


def scraped_of(app: AppContext) -> ScrapedSeries:
    """This app's scrape-time series, registered with its collector on first use."""

    def create() -> ScrapedSeries:
        from .scraped import ScrapedSeries

        collector = collector_of(app)
        section: MetricsSettings = app.settings.section(SECTION)
        scraped = ScrapedSeries(collector.queue_totals, vllm_names=section.vllm_names)
        collector.exposed.register(scraped)
        return scraped

    return app.state(SECTION + ".scraped", create)


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (SECTION, MetricsSettings)


@hookimpl
def ddx_llm_middleware(app: AppContext) -> MiddlewareSpec:
    from ddx_llm.middleware import MiddlewareSpec

    from .http import MetricsMiddleware

    collector = collector_of(app)
    return MiddlewareSpec("metrics", ORDER, lambda inner: MetricsMiddleware(inner, collector))


@hookimpl
def ddx_llm_routes(app: AppContext) -> list[BaseRoute]:
    from .exposition import metrics_route

    scraped = scraped_of(app)
    path = app.settings.section(SECTION).path
    return [metrics_route(path, collector_of(app), lambda: scraped.refresh(app))]


@hookimpl
def ddx_llm_observe(event: Event, app: AppContext) -> None:
    collector_of(app).observe(event)


@hookimpl
def ddx_llm_lifespan(app: AppContext) -> Any:
    return _marked_dead_at_shutdown(collector_of(app))


@asynccontextmanager
async def _marked_dead_at_shutdown(collector: MetricsCollector) -> AsyncIterator[None]:
    try:
        yield
    finally:
        collector.close()


@hookimpl
def ddx_llm_openapi(document: dict[str, Any], app: AppContext) -> None:
    text = {"schema": {"type": "string"}}
    document["paths"][app.settings.section(SECTION).path] = {
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
