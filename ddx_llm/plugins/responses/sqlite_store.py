"""Stored responses in an SQLite file (the default): the standard library's ``sqlite3``.

One connection per store, used by one worker thread at a time (a lock; the store's thread
limit is 1, so no thread waits on it for long).  WAL journal and a busy timeout let several
Hypercorn workers on one host share the file.  Retention is applied in the transaction that
stores a response: older than ``max_age_hours`` (every owner), beyond the owner's newest
``max_count``; an item is deleted with the response that introduced it (a foreign key).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .settings import ResponsesSettings
from .store import StoredResponse, ThreadedStore

FILE = "responses.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    stored_at REAL NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (owner, id)
);
CREATE INDEX IF NOT EXISTS responses_by_owner ON responses (owner, seq);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (stored_at);
CREATE TABLE IF NOT EXISTS items (
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    response_seq INTEGER NOT NULL REFERENCES responses (seq) ON DELETE CASCADE,
    body TEXT NOT NULL,
    PRIMARY KEY (owner, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_response ON items (response_seq);
"""
CHUNK = 500
"""Item ids looked up per query (SQLite's default limit is 999 bound parameters)."""


class SqliteStore(ThreadedStore):
    kind = "sqlite"
    errors = (sqlite3.Error, OSError)

    def __init__(self, settings: ResponsesSettings, folder: Path) -> None:
        super().__init__(settings, threads=1)
        self.path = folder / FILE
        self.lock = threading.Lock()
        self.connection: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def _db(self) -> sqlite3.Connection:
        if self.connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            db.executescript(SCHEMA)
            self.connection = db
        return self.connection

    def _cutoff(self) -> float:
        return time.time() - self.settings.max_age_seconds

    def _check(self) -> None:
        with self.lock:
            self._db().execute("SELECT count(*) FROM responses").fetchone()

    def _put(self, owner: str, record: StoredResponse) -> None:
        items = [(owner, item["id"], _json(item)) for item in record.own_items()]
        with self.lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                seq = db.execute(
                    "INSERT INTO responses (owner, id, stored_at, body) VALUES (?, ?, ?, ?)",
                    (owner, record.id, time.time(), record.dumps()),
                ).lastrowid
                db.executemany(
                    "INSERT OR IGNORE INTO items (owner, id, response_seq, body) "
                    "VALUES (?, ?, ?, ?)",
                    [(o, i, seq, body) for o, i, body in items],
                )
                db.execute("DELETE FROM responses WHERE stored_at < ?", (self._cutoff(),))
                db.execute(
                    "DELETE FROM responses WHERE owner = ? AND seq <= (SELECT seq FROM "
                    "responses WHERE owner = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (owner, owner, self.settings.max_count),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _get(self, owner: str, response_id: str) -> str | None:
        with self.lock:
            row = (
                self._db()
                .execute(
                    "SELECT body FROM responses WHERE owner = ? AND id = ? AND stored_at >= ?",
                    (owner, response_id, self._cutoff()),
                )
                .fetchone()
            )
        return row[0] if row else None

    def _delete(self, owner: str, response_id: str) -> bool:
        with self.lock:
            cursor = self._db().execute(
                "DELETE FROM responses WHERE owner = ? AND id = ?", (owner, response_id)
            )
        return cursor.rowcount > 0

    def _items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self.lock:
            db = self._db()
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    "SELECT items.id, items.body FROM items JOIN responses "
                    "ON responses.seq = items.response_seq WHERE items.owner = ? "
                    f"AND items.id IN ({marks}) AND responses.stored_at >= ?",
                    (owner, *chunk, self._cutoff()),
                ).fetchall()
                found.update((item_id, json.loads(body)) for item_id, body in rows)
        return found

    def _close(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
