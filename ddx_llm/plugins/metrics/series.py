"""The metrics of one app: its Prometheus series and the lifecycle events that feed them.

Every series lives in a private :class:`prometheus_client.CollectorRegistry` (never the global
one), so several apps in one process do not mix their numbers.  The LLM series are named after
vLLM's (``vllm:x`` → ``ddx_llm_x``) with vLLM's buckets, so a vLLM Grafana dashboard ports by
replacing the prefix; like vLLM they carry a ``model_name`` label (registry ids: bounded).

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before the process starts, as
prometheus-client requires), values go to per-process files in that folder and
:attr:`MetricsCollector.exposed` merges all of them with ``MultiProcessCollector``.  Gauges use
``livesum``: the sum over the workers alive.  A worker marks itself dead at shutdown
(:meth:`MetricsCollector.close`); :mod:`.exposition` reaps the files of workers that died
without shutting down.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

from ddx_llm import events
from ddx_llm.config import ConfigError
from ddx_llm.host import ModelState

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RUNNING = "ddx_llm_num_requests_running"
WAITING = "ddx_llm_num_requests_waiting"

FINISH_REASONS = ("stop", "length", "tool_calls", "cancelled", "error")
"""The ``finished_reason`` label values; anything else a backend reports counts as ``other``."""
REJECTION_CODES = ("overloaded", "model_unavailable", "model_not_found", "client_closed")
"""The ``code`` label values of ``ddx_llm_requests_rejected_total`` (the codes the model host
turns requests away with); any other code counts as ``other``."""

MODEL_STATES = tuple(state.value for state in ModelState)
STATE_OF_EVENT = {
    events.ModelLoading: ModelState.LOADING.value,
    events.ModelLoaded: ModelState.READY.value,
    events.ModelFailed: ModelState.FAILED.value,
    events.ModelUnloaded: ModelState.IDLE.value,
}

# vLLM's buckets (vllm/v1/metrics/loggers.py), kept identical so dashboards and their
# histogram_quantile() panels read the same.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
MODEL_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def multiprocess_dir() -> str | None:
    """The multiprocess folder, or None in single-process mode.

    Raises ConfigError when the variable names no folder, or when prometheus-client was imported
    before the variable was set (its value class is chosen at import and cannot change).
    """
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    if not os.path.isdir(path):
        raise ConfigError(f"{MULTIPROC_ENV}={path} is not a directory; create it before starting")
    if values.ValueClass is values.MutexValue:
        raise ConfigError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported; "
            "set it in the environment of the server process"
        )
    return path


class MetricsCollector:
    """The series of one app, fed by :meth:`observe` and the HTTP middleware.

    Args:
        model_ids: the registry ids; their per-model series start at zero (and ``idle``) so
            dashboards see them before the first request.
        request_duration_buckets: buckets of ``ddx_llm_request_duration_seconds``.
    """

    def __init__(self, model_ids: Iterable[str], request_duration_buckets: Iterable[float]):
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        self.merged: multiprocess.MultiProcessCollector | None = None
        if self.multiprocess_dir:
            # Values live in the folder; this registry only reads them back, merged.
            self.exposed = CollectorRegistry()
            self.merged = multiprocess.MultiProcessCollector(
                self.exposed, path=self.multiprocess_dir
            )
        else:
            self.exposed = self.registry
        reg = self.registry
        model = ["model_name"]

        self.requests = Counter(
            "ddx_llm_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=reg,
        )  # fmt: skip
        self.request_duration = Histogram(
            "ddx_llm_request_duration_seconds",
            "HTTP request duration in seconds, until the last byte of the body (streams included).",
            ["route", "method"], buckets=tuple(request_duration_buckets), registry=reg,
        )  # fmt: skip
        self.in_flight = Gauge(
            "ddx_llm_requests_in_flight", "HTTP requests being served (this scrape included).",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.running = Gauge(
            RUNNING, "Chat requests generating.",
            model, registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.waiting = Gauge(
            WAITING, "Chat requests waiting for the model or a slot.",
            model, registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.ttft = Histogram(
            "ddx_llm_time_to_first_token_seconds", "Time to first token in seconds.",
            model, buckets=TTFT_BUCKETS, registry=reg,
        )  # fmt: skip
        self.itl = Histogram(
            "ddx_llm_inter_token_latency_seconds", "Inter-token latency in seconds.",
            model, buckets=ITL_BUCKETS, registry=reg,
        )  # fmt: skip
        self.e2e = Histogram(
            "ddx_llm_e2e_request_latency_seconds", "End-to-end chat request latency in seconds.",
            model, buckets=REQUEST_LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.queue_time = Histogram(
            "ddx_llm_request_queue_time_seconds", "Time chat requests waited before generating.",
            model, buckets=REQUEST_LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "ddx_llm_prompt_tokens", "Prompt tokens processed.", model, registry=reg
        )
        self.generation_tokens = Counter(
            "ddx_llm_generation_tokens", "Tokens generated.", model, registry=reg
        )
        self.success = Counter(
            "ddx_llm_request_success",
            "Chat requests finished, by reason (stop, length, tool_calls, cancelled, error).",
            ["model_name", "finished_reason"], registry=reg,
        )  # fmt: skip
        self.load_time = Histogram(
            "ddx_llm_model_load_seconds", "Model load duration in seconds.",
            model, buckets=MODEL_LOAD_BUCKETS, registry=reg,
        )  # fmt: skip
        self.model_state = Gauge(
            "ddx_llm_model_state",
            "1 for the state each model is in (idle, loading, ready, failed), else 0; "
            "with several workers, the number of workers in that state.",
            ["model", "state"], registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.swaps = Counter(
            "ddx_llm_model_swaps", "Model swaps (a load that replaced a resident model).",
            registry=reg,
        )  # fmt: skip
        self.rejected = Counter(
            "ddx_llm_requests_rejected",
            "Requests turned away before generating, by code: overloaded (the queue was full "
            "or waited too long), model_unavailable (no model ready in time, or shutting down), "
            "model_not_found, client_closed (the client left while waiting).",
            ["model_name", "code"], registry=reg,
        )  # fmt: skip
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._itl: dict[str, Any] = {}  # the inter-token latency child of each model
        for model_id in model_ids:
            self._initialise(model_id)
        self._handlers: dict[type, Callable[[Any], None]] = {
            events.RequestQueued: self._queued,
            events.RequestRejected: self._rejected,
            events.RequestStarted: self._started,
            events.FirstToken: lambda e: self.child(self.ttft, e.model).observe(e.seconds),
            events.TokensGenerated: self._tokens,
            events.RequestDone: self._done,
            events.ModelLoaded: self._loaded,
        }

    def _initialise(self, model_id: str) -> None:
        for metric in (self.running, self.waiting, self.prompt_tokens, self.generation_tokens):
            metric.labels(model_id)
        for reason in FINISH_REASONS:
            self.success.labels(model_id, reason)
        for code in REJECTION_CODES:
            self.rejected.labels(model_id, code)
        self._set_state(model_id, ModelState.IDLE.value)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set and kept: events come
        several times per request (one per token), and prometheus-client's ``labels()`` costs
        more than the update.  Label sets are bounded (registry ids, fixed reasons and codes),
        and the child is the one ``labels()`` keeps and returns anyway."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # ------------------------------------------------------------------ observation

    def observe(self, event: events.Event) -> None:
        """Update the series from one lifecycle fact; cheap and never blocking."""
        state = STATE_OF_EVENT.get(type(event))
        if state is not None:
            self._set_state(event.model, state)  # type: ignore[attr-defined]
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _queued(self, event: events.RequestQueued) -> None:
        self.child(self.waiting, event.model).inc()

    def _rejected(self, event: events.RequestRejected) -> None:
        self.child(self.waiting, event.model).dec()
        code = event.code if event.code in REJECTION_CODES else "other"
        self.child(self.rejected, event.model, code).inc()

    def _started(self, event: events.RequestStarted) -> None:
        self.child(self.waiting, event.queued_model or event.model).dec()
        self.child(self.running, event.model).inc()
        self.child(self.queue_time, event.model).observe(event.queue_seconds)

    def _tokens(self, event: events.TokensGenerated) -> None:
        count = event.count
        if count <= 0:
            return
        itl = self._itl.get(event.model)  # once per token: one lookup, no key to build
        if itl is None:
            itl = self._itl[event.model] = self.child(self.itl, event.model)
        if count == 1:
            itl.observe(event.seconds)
            return
        per_token = event.seconds / count
        for _ in range(count):
            itl.observe(per_token)

    def _done(self, event: events.RequestDone) -> None:
        reason = event.finish_reason if event.finish_reason in FINISH_REASONS else "other"
        self.child(self.running, event.model).dec()
        self.child(self.success, event.model, reason).inc()
        self.child(self.e2e, event.model).observe(event.seconds)
        self.child(self.prompt_tokens, event.model).inc(max(event.prompt_tokens, 0))
        self.child(self.generation_tokens, event.model).inc(max(event.completion_tokens, 0))

    def _loaded(self, event: events.ModelLoaded) -> None:
        self.child(self.load_time, event.model).observe(event.seconds)
        if event.swapped:
            self.swaps.inc()

    def _set_state(self, model_id: str, state: str) -> None:
        for candidate in MODEL_STATES:
            self.child(self.model_state, model_id, candidate).set(1 if candidate == state else 0)

    def close(self) -> None:
        """At shutdown: in multiprocess mode, mark this worker's live gauges dead."""
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)

    def queue_totals(self) -> tuple[float, float]:
        """``(running, waiting)``: the requests generating and waiting, summed over models —
        and, in multiprocess mode, over the workers alive (reads their files: call it off the
        event loop then, as the exposition does)."""
        if self.merged is not None:
            families = list(self.merged.collect())
        else:
            families = [*self.running.collect(), *self.waiting.collect()]
        totals = dict.fromkeys((RUNNING, WAITING), 0.0)
        for family in families:
            if family.name in totals:
                totals[family.name] += sum(sample.value for sample in family.samples)
        return totals[RUNNING], totals[WAITING]

    # ------------------------------------------------------------------ HTTP

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request (labels must already be bounded)."""
        self.requests.labels(route, method, str(status)).inc()
        self.request_duration.labels(route, method).observe(seconds)
