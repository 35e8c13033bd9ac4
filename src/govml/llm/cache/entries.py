"""The SQLite table of cached answers: one row per (scope, prompt), with its vector.

The vector is kept beside the entry so that a lost or stale index file can be rebuilt
from SQLite alone. Ids come from AUTOINCREMENT and are never reused: they are the
labels of the vector index.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CacheEntry", "EntryTable"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope_key TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    usage TEXT NOT NULL,
    created REAL NOT NULL,
    last_hit REAL,
    hits INTEGER NOT NULL DEFAULT 0,
    vector BLOB NOT NULL,
    UNIQUE (scope_key, prompt_hash)
);
CREATE INDEX IF NOT EXISTS entries_last_used ON entries (COALESCE(last_hit, created));
CREATE INDEX IF NOT EXISTS entries_created ON entries (created);
CREATE TABLE IF NOT EXISTS scopes (
    scope_key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    system_prompt_hash TEXT NOT NULL,
    sampling TEXT NOT NULL
);
"""

_COLUMNS = "id, scope_key, prompt, answer, usage, created, last_hit, hits"


@dataclass(frozen=True)
class CacheEntry:
    """One cached answer."""

    id: int
    scope_key: str
    prompt: str
    answer: str
    usage: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    last_hit: float | None = None
    hits: int = 0


def _entry(row: tuple[Any, ...]) -> CacheEntry:
    id_, scope_key, prompt, answer, usage, created, last_hit, hits = row
    return CacheEntry(id_, scope_key, prompt, answer, json.loads(usage), created, last_hit, hits)


class EntryTable:
    """Thread-safe access to the entries database (one connection, one lock, WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction (much faster for bulk loads)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def register_scope(self, key: str, tenant: str, model: str, system: str, sampling: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO scopes VALUES (?, ?, ?, ?, ?)",
                (key, tenant, model, system, sampling),
            )

    def upsert(
        self,
        scope_key: str,
        prompt_hash: str,
        prompt: str,
        answer: str,
        usage: Mapping[str, Any],
        vector: np.ndarray,
        now: float,
    ) -> tuple[CacheEntry, bool]:
        """Insert an entry, or replace the answer of the same prompt; True when new."""
        usage_json = json.dumps(dict(usage), sort_keys=True)
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM entries WHERE scope_key = ? AND prompt_hash = ?",
                (scope_key, prompt_hash),
            ).fetchone()
            if row is None:
                cur = self._db.execute(
                    "INSERT INTO entries (scope_key, prompt_hash, prompt, answer, usage, created,"
                    " vector) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (scope_key, prompt_hash, prompt, answer, usage_json, now, blob),
                )
                entry_id, created = int(cur.lastrowid or 0), True
            else:
                entry_id, created = int(row[0]), False
                self._db.execute(
                    "UPDATE entries SET answer = ?, usage = ?, created = ?, last_hit = NULL,"
                    " hits = 0 WHERE id = ?",
                    (answer, usage_json, now, entry_id),
                )
            entry = self.get(entry_id)
        assert entry is not None
        return entry, created

    def get(self, entry_id: int) -> CacheEntry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (entry_id,)
            ).fetchone()
        return None if row is None else _entry(row)

    def get_many(self, ids: list[int]) -> dict[int, CacheEntry]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id IN ({marks})", ids
            ).fetchall()
        return {row[0]: _entry(row) for row in rows}

    def record_hit(self, entry_id: int, now: float) -> CacheEntry | None:
        with self._lock:
            self._db.execute(
                "UPDATE entries SET hits = hits + 1, last_hit = ? WHERE id = ?", (now, entry_id)
            )
            return self.get(entry_id)

    def delete(self, ids: list[int]) -> int:
        """Delete entries by id; returns how many existed."""
        if not ids:
            return 0
        with self._lock:
            before = self._db.total_changes
            self._db.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in ids])
            return self._db.total_changes - before

    def expired(self, before: float) -> list[tuple[int, str]]:
        """(id, scope_key) of entries created before ``before``."""
        with self._lock:
            return self._db.execute(
                "SELECT id, scope_key FROM entries WHERE created < ?", (before,)
            ).fetchall()

    def least_recently_used(self, n: int) -> list[tuple[int, str]]:
        """(id, scope_key) of the ``n`` entries hit (or stored) longest ago."""
        with self._lock:
            return self._db.execute(
                "SELECT id, scope_key FROM entries ORDER BY COALESCE(last_hit, created), id"
                " LIMIT ?",
                (n,),
            ).fetchall()

    def count(self, scope_key: str | None = None) -> int:
        with self._lock:
            if scope_key is None:
                row = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM entries WHERE scope_key = ?", (scope_key,)
                ).fetchone()
        return int(row[0])

    def ids(self, scope_key: str) -> set[int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM entries WHERE scope_key = ?", (scope_key,)
            ).fetchall()
        return {int(r[0]) for r in rows}

    def vectors(self, scope_key: str, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of a scope in chunks, to rebuild its index."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, vector FROM entries WHERE scope_key = ? ORDER BY id", (scope_key,)
            ).fetchall()
        for start in range(0, len(rows), 4096):
            chunk = rows[start : start + 4096]
            ids = np.array([r[0] for r in chunk], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in chunk), dtype=np.float32)
            yield ids, vecs.reshape(len(chunk), dim)
