"""Choosing the storage of stored responses from settings: SQLite or Redis."""

from __future__ import annotations

from typing import Any

from .settings import ResponsesSettings
from .store import ThreadedStore


def open_store(settings: ResponsesSettings, project_path: Any) -> ThreadedStore:
    """The storage the settings name: Redis for a ``storage_uri``, else SQLite in
    ``data_dir`` (made absolute with ``project_path``, ``Settings.resolve_path``).  Nothing is
    opened yet: the first call (or :meth:`ThreadedStore.check`) connects."""
    if settings.storage_uri:
        from .redis_store import RedisStore

        return RedisStore(settings)
    from .sqlite_store import SqliteStore

    return SqliteStore(settings, project_path(settings.data_dir))
