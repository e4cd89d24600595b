"""Stored responses: the record and the storage contract (:mod:`.storage` chooses one).

A :class:`StoredResponse` is self-contained: the Response object and the conversation that led
to it (``input_items``: the previous response's context and output, then this request's input),
so continuing from it, or listing its input items, reads one record — and deleting or dropping
an earlier response never breaks a later one.  Items this response introduced (its own input
items, its output) are also indexed by id, for ``item_reference`` inputs.

Every read and write is scoped by ``owner``, the client identity: another identity's response
is simply not there (404), whatever its id.  Storages run their blocking I/O in worker threads
(:class:`ThreadedStore`), never on the event loop, under asyncio and trio alike; a storage
that fails answers 503 ``store_unavailable``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import anyio.to_thread

from ddx_llm.errors import LlmError

from .settings import ResponsesSettings

logger = logging.getLogger("ddx_llm.plugins.responses")


class StoreUnavailable(LlmError):
    """The storage of responses failed or does not answer."""

    status = 503
    code = "store_unavailable"


@dataclass
class StoredResponse:
    """One stored response.  ``input_items`` is the conversation before its output, oldest
    first; ``new_items`` the ids of the items this response introduced."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    new_items: list[str]

    @property
    def id(self) -> str:
        return self.response["id"]

    def conversation(self) -> list[dict[str, Any]]:
        """What a response continuing from this one starts from: its input, then its output."""
        return [*self.input_items, *self.response["output"]]

    def own_items(self) -> list[dict[str, Any]]:
        """The items this response introduced, for ``item_reference``."""
        wanted = set(self.new_items)
        return [item for item in self.conversation() if item["id"] in wanted]

    def dumps(self) -> str:
        body = {
            "response": self.response,
            "input_items": self.input_items,
            "new_items": self.new_items,
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def loads(cls, text: str | bytes) -> StoredResponse:
        body = json.loads(text)
        return cls(body["response"], body["input_items"], body["new_items"])


class ThreadedStore:
    """Base of the storages: async methods that run the subclass's blocking ones in worker
    threads, at most ``threads`` at a time, and turn the storage's own exceptions (``errors``)
    into :class:`StoreUnavailable`.

    Subclasses write ``_put(owner, record)``, ``_get(owner, id) -> str | None``,
    ``_delete(owner, id) -> bool``, ``_items(owner, ids) -> {id: item}``, ``_close()``,
    ``_check()`` (raises when the storage cannot be used) and ``describe()``.
    """

    kind: ClassVar[str]
    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, settings: ResponsesSettings, threads: int) -> None:
        self.settings = settings
        self.limiter = anyio.CapacityLimiter(threads)

    async def _run(self, function: Any, *args: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=self.limiter)
        except self.errors as exc:
            logger.warning("responses: the %s storage failed: %r", self.kind, exc)
            raise StoreUnavailable(
                f"the storage of responses ({self.kind}) does not answer",
                detail=type(exc).__name__,
                headers={"Retry-After": "5"},
            ) from exc

    async def put(self, owner: str, record: StoredResponse) -> None:
        """Store ``record`` for ``owner``, then apply the retention (age, count)."""
        await self._run(self._put, owner, record)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """``owner``'s response ``response_id``, or None (absent, expired, or another's)."""
        text = await self._run(self._get, owner, response_id)
        return None if text is None else StoredResponse.loads(text)

    async def delete(self, owner: str, response_id: str) -> bool:
        """Delete ``owner``'s response and the items it introduced; False when absent."""
        return await self._run(self._delete, owner, response_id)

    async def items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored items of ``owner`` among ``ids`` (id → item); missing ids are absent."""
        return await self._run(self._items, owner, list(dict.fromkeys(ids))) if ids else {}

    async def check(self) -> None:
        """Raise :class:`StoreUnavailable` when the storage cannot be used now."""
        await self._run(self._check)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close, limiter=self.limiter)

    def describe(self) -> str:
        raise NotImplementedError
