"""Series read from the running app at scrape time: KV-cache usage, the prompt cache, and the
vLLM names that inference gateways read.

**How the figures get here.**  Each scrape first calls :meth:`ScrapedSeries.refresh` on the
event loop (:mod:`.exposition`): it asks the backend for its status — ``Backend.status``, the
protocol method behind ``/health`` — and the model host for its admission counts, and keeps
the answer.  :meth:`ScrapedSeries.collect` then turns the kept figures into series, wherever the
exposition renders (a worker thread in multiprocess mode).  No backend is inspected beyond its
documented status, and no event is needed: the figures are as fresh as the scrape.

**KV-cache usage** (``ddx_llm_kv_cache_usage_perc``; ``vllm:kv_cache_usage_perc``): the
fraction, 0 to 1, of the KV-cache slots of the generation batch that running sequences hold.
vLLM reports the share of its KV blocks that running requests reference; blocks that only hold
cached prefixes count as free there.  MLX has no paged block pool: each sequence of mlx-lm's
continuous batch gets its own KV cache when it joins and frees it when it leaves, and the batch
holds at most ``max_batch`` of them — the KV budget the worker enforces (a new request waits
when it is full, which is what vLLM's figure near 1 means).  So on ``mlx`` it is
``sequences / max_batch`` from ``/health`` → ``mlx``; a backend whose status has no such figures
(mock, omni) reports the core's generation slots in use, ``running / max_running``.  The prompt
cache (processed prompts kept for reuse, evicted least recently used first) is, like vLLM's
cached-but-free blocks, not usage: a warm server's full prompt cache would otherwise read as
saturation, and the endpoint picker (which leaves out endpoints at ``kv >= 0.8``) would prefer
cold replicas over warm ones.  It has series of its own: ``ddx_llm_prompt_cache_bytes``,
``ddx_llm_prompt_cache_entries`` and ``ddx_llm_prompt_cache_reused_tokens_total``, present when
the backend reports an enabled prompt cache (``mlx.prompt_cache`` in ``/health``).

**vLLM names** (``[metrics] vllm_names``): ``vllm:num_requests_running``,
``vllm:num_requests_waiting`` and ``vllm:kv_cache_usage_perc``, each one series labelled with
the served model (``model_name``), because the endpoint picker reads the first series of a
family: the request counts are summed over every model (and, in multiprocess mode, over the
workers alive).  With several Hypercorn workers, the KV-cache figure is that of the worker that
answered the scrape (each has its own model and batch): run one worker per pod.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from ddx_llm.context import AppContext
    from ddx_llm.host import Admission

logger = logging.getLogger(__name__)

KV_HELP = (
    "Fraction (0-1) of the generation batch's KV-cache slots held by running sequences "
    "(mlx: sequences / max_batch; else running / max_running)."
)
RUNNING_HELP = "Requests generating, over every model (vLLM's name, for inference gateways)."
WAITING_HELP = "Requests waiting for the model or a slot, over every model (vLLM's name)."


@dataclass(frozen=True)
class Figures:
    """What one scrape read from the app."""

    model: str = ""
    kv_cache_usage: float = 0.0
    prompt_cache: dict[str, Any] | None = None


def kv_cache_usage(status: dict[str, Any], admission: Admission) -> float:
    """The KV-cache slot usage from a backend's status (``sequences`` of ``max_batch``), else
    from the core's admission (``running`` of ``max_running``); between 0 and 1."""
    sequences, batch = status.get("sequences"), status.get("max_batch")
    if isinstance(sequences, int) and isinstance(batch, int) and batch > 0:
        return min(1.0, max(0.0, sequences / batch))
    return min(1.0, admission.running / max(1, admission.max_running))


def read_figures(app: AppContext) -> Figures:
    """Ask the backend and the host (on the event loop: ``status`` must be fast there)."""
    host = app.host
    status = app.backend.status(host.resident_handle) or {}
    cache = status.get("prompt_cache")
    enabled = isinstance(cache, dict) and cache.get("enabled", True) and "entries" in cache
    return Figures(
        model=host.model_id or host.default_model,
        kv_cache_usage=kv_cache_usage(status, host.admission),
        prompt_cache=cache if enabled else None,
    )


class ScrapedSeries:
    """A prometheus-client collector of the figures read at the last :meth:`refresh`.

    Args:
        queue_totals: ``() -> (running, waiting)`` over every model (and worker).
        vllm_names: also expose the vLLM-named series.
    """

    def __init__(self, queue_totals: Callable[[], tuple[float, float]], *, vllm_names: bool):
        self.queue_totals = queue_totals
        self.vllm_names = vllm_names
        self.figures = Figures()
        self._warned = False

    def refresh(self, app: AppContext) -> None:
        """Read the figures now (on the event loop).  A backend whose status fails keeps the
        last figures; the failure is logged once."""
        try:
            self.figures = read_figures(app)
        except Exception:
            if not self._warned:
                logger.warning("metrics: the backend's status failed; figures kept", exc_info=True)
                self._warned = True

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (so the registry does not collect at registration)."""
        yield GaugeMetricFamily("ddx_llm_kv_cache_usage_perc", KV_HELP)
        if self.vllm_names:
            yield GaugeMetricFamily("vllm:num_requests_running", RUNNING_HELP)
            yield GaugeMetricFamily("vllm:num_requests_waiting", WAITING_HELP)
            yield GaugeMetricFamily("vllm:kv_cache_usage_perc", KV_HELP)
        yield GaugeMetricFamily("ddx_llm_prompt_cache_bytes", "")
        yield GaugeMetricFamily("ddx_llm_prompt_cache_entries", "")
        yield CounterMetricFamily("ddx_llm_prompt_cache_reused_tokens", "")

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        model = [figures.model]
        yield _gauge("ddx_llm_kv_cache_usage_perc", KV_HELP, model, figures.kv_cache_usage)
        if self.vllm_names:
            running, waiting = self.queue_totals()
            yield _gauge("vllm:num_requests_running", RUNNING_HELP, model, running)
            yield _gauge("vllm:num_requests_waiting", WAITING_HELP, model, waiting)
            yield _gauge("vllm:kv_cache_usage_perc", KV_HELP, model, figures.kv_cache_usage)
        cache = figures.prompt_cache
        if cache is not None:
            yield _gauge(
                "ddx_llm_prompt_cache_bytes",
                "Memory held by the prompt cache (processed prompts kept for reuse).",
                model,
                float(cache.get("mb", 0)) * 1e6,
            )
            yield _gauge(
                "ddx_llm_prompt_cache_entries",
                "Processed prompts the prompt cache holds.",
                model,
                float(cache.get("entries", 0)),
            )
            reused = CounterMetricFamily(
                "ddx_llm_prompt_cache_reused_tokens",
                "Prompt tokens served from the prompt cache instead of being processed "
                "(since the model was loaded).",
                labels=["model_name"],
            )
            reused.add_metric(model, float(cache.get("tokens_reused", 0)))
            yield reused


def _gauge(name: str, help_text: str, labels: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["model_name"])
    family.add_metric(labels, value)
    return family
