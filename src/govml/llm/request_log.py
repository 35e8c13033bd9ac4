"""The gateway's request log: one row per request (SQLite or PostgreSQL), written off the request path.

Handlers put a :class:`RequestRecord` on a bounded queue and return; one writer thread
drains it in batches (one transaction per batch). Prompts and answers are stored as
sha256 hashes unless the YAML opts in to text, and text is always the redacted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from govml.storage import Database, StorageError, StorageTarget, parse_storage_url

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    created {real} NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    backend TEXT,
    status_code INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    stream INTEGER NOT NULL,
    cache_status TEXT,
    cache_similarity {real},
    input_safety {real},
    output_safety {real},
    categories TEXT NOT NULL,
    prompt_sha256 TEXT,
    answer_sha256 TEXT,
    prompt_text TEXT,
    answer_text TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_ms {real},
    time_to_first_token_ms {real},
    carbon_g {real}
)
"""
_COLUMNS = (
    "request_id",
    "created",
    "tenant",
    "model",
    "backend",
    "status_code",
    "outcome",
    "stream",
    "cache_status",
    "cache_similarity",
    "input_safety",
    "output_safety",
    "categories",
    "prompt_sha256",
    "answer_sha256",
    "prompt_text",
    "answer_text",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "time_to_first_token_ms",
    "carbon_g",
)
_INSERT = (
    f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
    " ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
)
_STOP = object()


def text_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class RequestRecord:
    """One request as logged. ``prompt`` and ``answer`` are the redacted texts."""

    request_id: str
    created: float
    tenant: str
    model: str
    status_code: int
    outcome: str
    stream: bool = False
    backend: str | None = None
    cache_status: str | None = None
    cache_similarity: float | None = None
    input_safety: float | None = None
    output_safety: float | None = None
    categories: list[str] = field(default_factory=list)
    prompt: str | None = None
    answer: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    time_to_first_token_ms: float | None = None
    carbon_g: float | None = None

    def row(self, *, store_text: bool) -> tuple[object, ...]:
        values = asdict(self)
        values["stream"] = int(self.stream)
        values["categories"] = json.dumps(self.categories)
        values["prompt_sha256"] = text_hash(self.prompt)
        values["answer_sha256"] = text_hash(self.answer)
        values["prompt_text"] = self.prompt if store_text else None
        values["answer_text"] = self.answer if store_text else None
        return tuple(values[c] for c in _COLUMNS)


class RequestLog:
    """A batching writer (SQLite file or PostgreSQL URL) on its own thread; ``write`` never blocks."""

    def __init__(
        self,
        target: StorageTarget | str | Path,
        *,
        store_text: bool = False,
        max_queue: int = 10_000,
        batch_size: int = 256,
        on_drop: object | None = None,
    ) -> None:
        self.target = target if isinstance(target, StorageTarget) else parse_storage_url(target)
        self.store_text = store_text
        self._batch_size = batch_size
        self._on_drop = on_drop
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._db = Database(self.target)  # fails here, at start-up, when the database is unreachable
        self._db.create([_SCHEMA])
        self._thread = threading.Thread(target=self._run, name="govml-request-log", daemon=True)
        self._thread.start()

    def write(self, record: RequestRecord) -> bool:
        """Queue a record; False (and a dropped count) when the queue is full."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            if callable(self._on_drop):
                self._on_drop()
            return False
        return True

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                batch: list[RequestRecord] = []
                stop = item is _STOP
                if not stop:
                    batch.append(item)  # type: ignore[arg-type]
                while not stop and len(batch) < self._batch_size:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        batch.append(item)  # type: ignore[arg-type]
                if batch:
                    self._flush(batch)
                if stop:
                    return
        finally:
            self._db.close()

    def _flush(self, batch: list[RequestRecord]) -> None:
        try:
            self._db.write_batch(_INSERT, [r.row(store_text=self.store_text) for r in batch])
        except StorageError:
            log.exception("could not write %d request-log records to %s", len(batch), self.target)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the writer."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
