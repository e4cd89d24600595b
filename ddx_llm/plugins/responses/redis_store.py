"""Stored responses in Redis (``[responses] storage_uri``), shared by every replica.

redis-py's synchronous client in worker threads (its asyncio client does not run under trio);
its connection pool is thread-safe.  Keys, per client identity ``<owner>`` (identities never
hold ``:`` or braces):

- ``<namespace>:responses:{<owner>}:r:<id>`` — the record (JSON), expiring after
  ``max_age_hours`` (Redis drops it on time, with no sweep of ours);
- ``<namespace>:responses:{<owner>}:i:<item id>`` — ``{"response": id, "item": …}`` for
  ``item_reference``, with the same expiry;
- ``<namespace>:responses:{<owner>}:order`` — a sorted set of the owner's response ids by store
  time, for ``max_count``: beyond it the oldest are deleted with the items they introduced.

A record and its index entries are written in one ``MULTI``/``EXEC`` transaction; the braces
make the owner a hash tag, so that an owner's keys share one slot should the server be a
cluster behind a proxy.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ddx_llm.config import require_modules

from .settings import ResponsesSettings
from .store import StoredResponse, ThreadedStore

THREADS = 16


class RedisStore(ThreadedStore):
    kind = "redis"

    def __init__(self, settings: ResponsesSettings) -> None:
        super().__init__(settings, threads=THREADS)
        require_modules(
            "redis",
            feature="Redis storage of responses",
            install='pip install "ddx-llm[responses]"',
        )
        import redis

        self.errors = (redis.RedisError,)
        self.client = redis.Redis.from_url(
            settings.storage_uri,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.socket_timeout,
            health_check_interval=30,
        )
        self.prefix = f"{settings.namespace}:responses"

    def describe(self) -> str:
        parts = urlsplit(self.settings.storage_uri)
        if parts.password is not None:  # never log a password
            netloc = f"***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        return f"redis {urlunsplit(parts)}"

    def _key(self, owner: str, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{{{owner}}}:{kind}" + (f":{name}" if name else "")

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.settings.max_age_seconds * 1000))

    def _check(self) -> None:
        self.client.ping()

    def _put(self, owner: str, record: StoredResponse) -> None:
        now, ttl, order = time.time(), self._ttl_ms, self._key(owner, "order")
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._key(owner, "r", record.id), record.dumps(), px=ttl)
        for item in record.own_items():
            entry = json.dumps({"response": record.id, "item": item}, separators=(",", ":"))
            pipe.set(self._key(owner, "i", item["id"]), entry, px=ttl, nx=True)
        pipe.zadd(order, {record.id: now})
        pipe.zremrangebyscore(order, "-inf", now - self.settings.max_age_seconds)
        pipe.pexpire(order, ttl)
        pipe.zcard(order)
        count = pipe.execute()[-1]
        excess = count - self.settings.max_count
        if excess > 0:
            for old in self.client.zrange(order, 0, excess - 1):
                self._drop(owner, old.decode())

    def _get(self, owner: str, response_id: str) -> bytes | None:
        return self.client.get(self._key(owner, "r", response_id))

    def _delete(self, owner: str, response_id: str) -> bool:
        return self._drop(owner, response_id)

    def _drop(self, owner: str, response_id: str) -> bool:
        """Delete a response, its entry in the order, and the item entries that are its."""
        key = self._key(owner, "r", response_id)
        text = self.client.get(key)
        self.client.zrem(self._key(owner, "order"), response_id)
        if text is None:
            return False
        record = StoredResponse.loads(text)
        item_keys = [self._key(owner, "i", item_id) for item_id in record.new_items]
        entries = self.client.mget(item_keys) if item_keys else []
        mine = [
            item_key
            for item_key, entry in zip(item_keys, entries, strict=True)
            if entry is not None and json.loads(entry)["response"] == response_id
        ]
        return self.client.delete(key, *mine) > 0

    def _items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        entries = self.client.mget([self._key(owner, "i", item_id) for item_id in ids])
        return {
            item_id: json.loads(entry)["item"]
            for item_id, entry in zip(ids, entries, strict=True)
            if entry is not None
        }

    def _close(self) -> None:
        self.client.close()
