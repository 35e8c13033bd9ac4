"""The table of cached answers: one row per (scope, prompt), with its vector.

The vector is kept beside the entry so that a lost or stale index file can be rebuilt
from the database alone; the prompt's token vectors (for the token check) are kept too,
in int8 with one scale per token (:func:`pack_tokens`: a quarter of float32; the token
check's curve on the paraphrase data moves by at most one question). Ids come from the
database's sequence (SQLite's AUTOINCREMENT, PostgreSQL's identity) and are never
reused, also across replicas sharing a PostgreSQL database: they are the labels of the
vector index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from govml.storage import Database, StorageTarget

__all__ = ["CacheEntry", "EntryTable", "pack_tokens", "unpack_tokens"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
    id {serial},
    scope_key TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    usage TEXT NOT NULL,
    created {real} NOT NULL,
    last_hit {real},
    hits INTEGER NOT NULL DEFAULT 0,
    vector {blob} NOT NULL,
    UNIQUE (scope_key, prompt_hash)
)""",
    "CREATE INDEX IF NOT EXISTS entries_last_used ON entries ((COALESCE(last_hit, created)))",
    "CREATE INDEX IF NOT EXISTS entries_created ON entries (created)",
    # a replica catches up on a scope with "id > the last id it indexed"
    "CREATE INDEX IF NOT EXISTS entries_scope_id ON entries (scope_key, id)",
    """CREATE TABLE IF NOT EXISTS scopes (
    scope_key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    system_prompt_hash TEXT NOT NULL,
    sampling TEXT NOT NULL
)""",
)

# added after the first release: tables made before get it on open (NULL until set)
_LATER_COLUMNS = {"tokens": "{blob}"}

_COLUMNS = "id, scope_key, prompt, answer, usage, created, last_hit, hits"
_CHUNK = 500  # ids per IN (...) list, under SQLite's limit on bound values


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


def pack_tokens(tokens: np.ndarray) -> bytes:
    """Token vectors ``(tokens, dim)`` as bytes: int8 rows, then one float32 scale per row."""
    rows = np.asarray(tokens, dtype=np.float32)
    if rows.ndim != 2 or not len(rows):
        raise ValueError(f"token vectors must be a non-empty (tokens, dim) array, got shape {rows.shape}")
    scales = np.abs(rows).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    quantised = np.round(rows / scales[:, None]).astype(np.int8)
    return quantised.tobytes() + scales.astype(np.float32).tobytes()


def unpack_tokens(blob: bytes, dim: int) -> np.ndarray:
    """The ``(tokens, dim)`` float32 array :func:`pack_tokens` stored."""
    count, rest = divmod(len(blob), dim + 4)
    if rest or not count:
        raise ValueError(f"a token blob of {len(blob)} bytes does not hold {dim}-d rows")
    quantised = np.frombuffer(blob, dtype=np.int8, count=count * dim).reshape(count, dim)
    scales = np.frombuffer(blob, dtype=np.float32, offset=count * dim)
    return quantised.astype(np.float32) * scales[:, None]


def _entry(row: tuple[Any, ...]) -> CacheEntry:
    id_, scope_key, prompt, answer, usage, created, last_hit, hits = row
    return CacheEntry(int(id_), scope_key, prompt, answer, json.loads(usage), created, last_hit, hits)


class EntryTable:
    """Thread-safe access to the entries (one connection, one lock): a SQLite file or PostgreSQL."""

    def __init__(self, target: StorageTarget | str | Path) -> None:
        self._db = Database(target)
        self._db.create(_SCHEMA)
        self._db.ensure_columns("entries", _LATER_COLUMNS)

    @property
    def shared(self) -> bool:
        """True when other replicas may add and delete entries (PostgreSQL)."""
        return self._db.shared

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction (much faster for bulk loads)."""
        with self._db.transaction():
            yield

    def register_scope(self, key: str, tenant: str, model: str, system: str, sampling: str) -> None:
        self._db.execute(
            "INSERT INTO scopes VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope_key) DO NOTHING",
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
        tokens: np.ndarray | None = None,
    ) -> tuple[CacheEntry, bool]:
        """Insert an entry, or replace the answer of the same prompt; True when new.
        ``tokens``: the prompt's token vectors, kept for the token check."""
        usage_json = json.dumps(dict(usage), sort_keys=True)
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        token_blob = None if tokens is None else pack_tokens(tokens)
        with self._db.transaction():
            rows = self._db.execute(
                "SELECT id FROM entries WHERE scope_key = ? AND prompt_hash = ?", (scope_key, prompt_hash)
            )
            if not rows:
                # another replica may insert the same prompt meanwhile: then update its row
                rows = self._db.execute(
                    "INSERT INTO entries (scope_key, prompt_hash, prompt, answer, usage, created, vector, tokens)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope_key, prompt_hash) DO NOTHING"
                    f" RETURNING {_COLUMNS}",
                    (scope_key, prompt_hash, prompt, answer, usage_json, now, blob, token_blob),
                )
                if rows:
                    return _entry(rows[0]), True
            rows = self._db.execute(
                "UPDATE entries SET answer = ?, usage = ?, created = ?, last_hit = NULL, hits = 0,"
                " tokens = COALESCE(?, tokens)"
                f" WHERE scope_key = ? AND prompt_hash = ? RETURNING {_COLUMNS}",
                (answer, usage_json, now, token_blob, scope_key, prompt_hash),
            )
        return _entry(rows[0]), False

    def get(self, entry_id: int) -> CacheEntry | None:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (entry_id,))
        return _entry(rows[0]) if rows else None

    def get_many(self, ids: list[int]) -> dict[int, CacheEntry]:
        found: dict[int, CacheEntry] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE id IN ({marks})", chunk):
                found[int(row[0])] = _entry(row)
        return found

    def tokens(self, ids: list[int], dim: int) -> dict[int, np.ndarray]:
        """Stored token vectors by entry id; entries without them are left out."""
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, tokens FROM entries WHERE id IN ({marks}) AND tokens IS NOT NULL"
            for entry_id, blob in self._db.execute(sql, chunk):
                found[int(entry_id)] = unpack_tokens(bytes(blob), dim)
        return found

    def set_tokens(self, rows: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Keep token vectors computed later for entries stored without them; returns
        them as stored (int8), as :meth:`tokens` will read them."""
        blobs = {int(i): pack_tokens(t) for i, t in rows.items()}
        self._db.write_batch("UPDATE entries SET tokens = ? WHERE id = ?", [(b, i) for i, b in blobs.items()])
        return {i: unpack_tokens(b, rows[i].shape[1]) for i, b in blobs.items()}

    def record_hit(self, entry_id: int, now: float) -> CacheEntry | None:
        rows = self._db.execute(
            f"UPDATE entries SET hits = hits + 1, last_hit = ? WHERE id = ? RETURNING {_COLUMNS}", (now, entry_id)
        )
        return _entry(rows[0]) if rows else None

    def delete(self, ids: list[int]) -> int:
        """Delete entries by id; returns how many existed (another replica may have deleted some)."""
        deleted = 0
        with self._db.transaction():
            for start in range(0, len(ids), _CHUNK):
                chunk = [int(i) for i in ids[start : start + _CHUNK]]
                marks = ",".join("?" * len(chunk))
                deleted += len(self._db.execute(f"DELETE FROM entries WHERE id IN ({marks}) RETURNING id", chunk))
        return deleted

    def expired(self, before: float) -> list[tuple[int, str]]:
        """(id, scope_key) of entries created before ``before``."""
        rows = self._db.execute("SELECT id, scope_key FROM entries WHERE created < ?", (before,))
        return [(int(i), str(k)) for i, k in rows]

    def least_recently_used(self, n: int) -> list[tuple[int, str]]:
        """(id, scope_key) of the ``n`` entries hit (or stored) longest ago."""
        rows = self._db.execute(
            "SELECT id, scope_key FROM entries ORDER BY COALESCE(last_hit, created), id LIMIT ?", (n,)
        )
        return [(int(i), str(k)) for i, k in rows]

    def count(self, scope_key: str | None = None) -> int:
        if scope_key is None:
            rows = self._db.execute("SELECT COUNT(*) FROM entries")
        else:
            rows = self._db.execute("SELECT COUNT(*) FROM entries WHERE scope_key = ?", (scope_key,))
        return int(rows[0][0])

    def ids(self, scope_key: str) -> set[int]:
        rows = self._db.execute("SELECT id FROM entries WHERE scope_key = ?", (scope_key,))
        return {int(r[0]) for r in rows}

    def vectors(self, scope_key: str, dim: int, *, after: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of a scope's entries with id > ``after``, in chunks, in id order."""
        rows = self._db.execute(
            "SELECT id, vector FROM entries WHERE scope_key = ? AND id > ? ORDER BY id", (scope_key, after)
        )
        for start in range(0, len(rows), 4096):
            chunk = rows[start : start + 4096]
            ids = np.array([r[0] for r in chunk], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in chunk), dtype=np.float32)
            yield ids, vecs.reshape(len(chunk), dim)
