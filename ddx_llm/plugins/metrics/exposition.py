"""``GET /metrics``: the Prometheus text exposition (OpenMetrics when the scraper asks for it).

A plain Starlette ``Route`` (no Mount, so no slash redirect) at ``[metrics] path``.  In
multiprocess mode a scrape reads one file per worker, so it runs off the event loop, and it
first reaps the live-gauge files of workers that died without shutting down, so ``livesum``
gauges count only workers alive.
"""

from __future__ import annotations

import glob
import logging
import os
import re

import anyio
from prometheus_client import multiprocess
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .series import MetricsCollector

logger = logging.getLogger(__name__)


def metrics_route(path: str, collector: MetricsCollector) -> Route:
    """The exposition route of ``collector`` at ``path``."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        if collector.multiprocess_dir:
            body = await anyio.to_thread.run_sync(render, collector, encoder)
        else:
            body = render(collector, encoder)
        return Response(body, media_type=content_type)

    return Route(path, metrics, methods=["GET"], name="metrics")


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
