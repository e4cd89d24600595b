"""``GET /metrics``: the Prometheus text exposition (OpenMetrics when the scraper asks for it).

A plain Starlette ``Route`` (no Mount, so no slash redirect) at ``[metrics] path``.  Each scrape
first reads the figures taken at scrape time (:mod:`.scraped`) on the event loop.  In
multiprocess mode a scrape reads one file per worker, so it runs off the event loop, and it
first reaps the live-gauge files of workers that died without shutting down, so ``livesum``
gauges count only workers alive.

OpenMetrics is written with prometheus-client's ``allow-utf-8`` escaping, whatever escaping the
scraper asked for: every name here is a valid classic Prometheus name, which no escaping
changes — but prometheus-client 0.26 escapes *sample* names with the rules of label names, so
under ``underscores`` a ``vllm:num_requests_running`` family would get samples named
``vllm_num_requests_running`` (a broken exposition).
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import re
from collections.abc import Callable

import anyio
from prometheus_client import multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .series import MetricsCollector

logger = logging.getLogger(__name__)


def metrics_route(
    path: str, collector: MetricsCollector, refresh: Callable[[], None] | None = None
) -> Route:
    """The exposition route of ``collector`` at ``path``; ``refresh()`` (on the event loop)
    takes the scrape-time figures first."""

    async def metrics(request: Request) -> Response:
        if refresh is not None:
            refresh()
        encoder, content_type = encoder_for(request.headers.get("accept", ""))
        if collector.multiprocess_dir:
            body = await anyio.to_thread.run_sync(render, collector, encoder)
        else:
            body = render(collector, encoder)
        return Response(body, media_type=content_type)

    return Route(path, metrics, methods=["GET"], name="metrics")


def encoder_for(accept: str) -> tuple[Callable, str]:
    """prometheus-client's encoder and content type for ``accept``; OpenMetrics with its
    ``allow-utf-8`` escaping (see the module docstring)."""
    encoder, content_type = choose_encoder(accept)
    if (
        isinstance(encoder, functools.partial)
        and encoder.func is openmetrics_exposition.generate_latest
    ):
        encoder = functools.partial(encoder, escaping=openmetrics_exposition.ALLOWUTF8)
    return encoder, content_type


def render(collector: MetricsCollector, encoder) -> bytes:
    """The exposition in ``encoder``'s format (merged over workers in multiprocess mode; reads
    files then, so call it off the event loop)."""
    if collector.multiprocess_dir:
        reap_dead_workers(collector.multiprocess_dir)
    return encoder(collector.exposed)


LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def reap_dead_workers(path: str) -> None:
    """Drop the live-gauge files of processes that are gone (killed without a clean shutdown),
    so ``livesum`` gauges count only workers alive."""
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = LIVE_FILE.search(os.path.basename(file))
        if match and not pid_alive(int(match.group(1))):
            logger.info("metrics: reaping gauges of dead worker %s", match.group(1))
            multiprocess.mark_process_dead(int(match.group(1)), path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
