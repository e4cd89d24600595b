"""Storage figures: write and read latency of a stored response, SQLite vs Redis.

Measured through the store's own async API (the worker-thread hop included), as a request pays
it: the median of ROUNDS writes (``put``, retention included) and of ROUNDS reads (``get``) of
a small record (a short exchange) and a large one (a long conversation).  The figures are
printed (``pytest -s`` not needed) and checked against generous bounds, so a storage that
became pathologically slow fails.
"""

from __future__ import annotations

import statistics
import time

import pytest
from tools.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

from ddx_llm.plugins.responses.settings import ResponsesSettings
from ddx_llm.plugins.responses.storage import open_store
from ddx_llm.plugins.responses.store import StoredResponse

pytestmark = pytest.mark.anyio

ROUNDS = 200
BOUND_MS = 50.0
"""A median above this is a broken storage, not a slow machine (typical: well under 2 ms)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # figures, not behaviour: one event loop is enough (the rest runs on both)


def conversation(turns: int, number: int) -> StoredResponse:
    items = []
    for turn in range(turns):
        text = f"turn {turn}: " + "a sentence of an ordinary conversation. " * 5
        items.append({"id": f"msg_{number}_{turn}", "type": "message",
                      "role": "user" if turn % 2 == 0 else "assistant", "status": "completed",
                      "content": [{"type": "input_text", "text": text}]})  # fmt: skip
    answer = {"id": f"msg_out_{number}", "type": "message", "role": "assistant",
              "status": "completed",
              "content": [{"type": "output_text", "text": "an answer " * 30, "annotations": [],
                           "logprobs": []}]}  # fmt: skip
    usage = {"input_tokens": 100, "output_tokens": 60}
    response = {"id": f"resp_{number}", "object": "response", "status": "completed",
                "output": [answer], "usage": usage}  # fmt: skip
    return StoredResponse(response, items, [items[-1]["id"], answer["id"]])


async def figures(store, turns: int) -> tuple[float, float, int]:
    records = [conversation(turns, turns * ROUNDS + n) for n in range(ROUNDS)]
    writes, reads = [], []
    for record in records:
        started = time.perf_counter()
        await store.put("alice", record)
        writes.append(time.perf_counter() - started)
    for record in records:
        started = time.perf_counter()
        got = await store.get("alice", record.id)
        reads.append(time.perf_counter() - started)
        assert got is not None and got.input_items == record.input_items
    size = len(records[0].dumps().encode())
    return statistics.median(writes) * 1000, statistics.median(reads) * 1000, size


async def test_write_and_read_latency_sqlite_vs_redis(tmp_path, redis_url, capsys):  # noqa: F811
    lines = []
    for kind, uri in (("sqlite", ""), ("redis", redis_url)):
        store = open_store(ResponsesSettings(storage_uri=uri), tmp_path.joinpath)
        try:
            for label, turns in (("small", 2), ("large", 200)):
                write_ms, read_ms, size = await figures(store, turns)
                lines.append(f"{kind:6} {label} ({size / 1000:.1f} kB): write {write_ms:.3f} ms, "
                             f"read {read_ms:.3f} ms (median of {ROUNDS})")  # fmt: skip
                assert write_ms < BOUND_MS and read_ms < BOUND_MS, lines[-1]
        finally:
            await store.close()
    with capsys.disabled():
        print("\nstored-response latency:\n  " + "\n  ".join(lines))
