"""The semantic cache: answers kept per scope, found again by meaning.

A lookup embeds the prompt, asks the scope's vector index for its nearest stored
prompts, and returns the first one whose cosine similarity reaches the threshold and
that passes the second check (numbers, negation and key terms agree, see
``agreement.py``) and the token check (the two prompts' token vectors cover each other:
:func:`~govml.llm.cache.agreement.token_agreement`; ``token_threshold=None`` turns it
off). The token vectors come from the same encoder run as the sentence vector and are
stored with each entry, so the check costs a table read and a small matrix product.
Entries live in SQLite (``cache.db``) or, for several replicas, in
PostgreSQL (``storage_url``); each scope's index is a file under ``index/`` and is
repaired from the entries when it is missing or stale.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from govml.errors import ConfigError
from govml.llm.cache.agreement import prompts_agree, token_agreement
from govml.llm.cache.entries import CacheEntry, EntryTable
from govml.llm.cache.index import INDEX_KINDS, VectorIndex, load_index, make_index
from govml.llm.cache.scope import CacheScope, sha256_hex
from govml.llm.embedding import Embedder, TokenEncoder, embedder_identity, get_embedder
from govml.storage import parse_storage_url

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_TOKEN_THRESHOLD",
    "TOKEN_CHECK_GATE",
    "CacheLookup",
    "SemanticCache",
    "choose_hit",
]

#: cosine similarity a stored prompt needs to answer a new one (second check on, no token
#: check): the lowest threshold with at most 2% false hits on the tuning half of
#: paraphrase_pairs.json (docs/llm-cache.md)
DEFAULT_THRESHOLD = 0.91
#: token agreement a candidate needs (the token check, on by default): the lowest with
#: at most 2% false hits on the tuning half
DEFAULT_TOKEN_THRESHOLD = 0.81
#: the cosine threshold that goes with the token check: below 0.80 it accepts nothing
#: more on the tuning half (docs/llm-cache.md)
TOKEN_CHECK_GATE = 0.80
_AUTOSAVE_EVERY = 1000
_PURGE_EVERY = 256
#: with shared storage, how often a scope's index is compared in full with the table
_RECONCILE_SECONDS = 60.0


@dataclass(frozen=True)
class CacheLookup:
    """What a lookup found. ``similarity`` is that of the best candidate, hit or not."""

    status: Literal["hit", "miss", "bypass"]
    similarity: float | None = None
    entry: CacheEntry | None = None
    reason: str = ""

    @property
    def hit(self) -> bool:
        return self.status == "hit"


def _normalise_prompt(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt).strip()


def choose_hit(
    prompt: str,
    candidates: list[tuple[CacheEntry, float]],
    threshold: float,
    second_check: bool,
    *,
    token_threshold: float | None = None,
    token_scores: Callable[[list[int]], Sequence[float]] | None = None,
) -> tuple[int | None, str]:
    """Index of the first candidate (best first) that may answer ``prompt``, and why not.

    A candidate qualifies when its similarity reaches ``threshold``, with
    ``second_check`` :func:`prompts_agree` accepts it, and with ``token_threshold``
    its token agreement reaches it. ``token_scores`` gives the token agreement of the
    candidates at the given positions; it is called once, only when some candidate
    passed the other tests.
    """
    reason = ""
    eligible: list[int] = []
    for position, (entry, similarity) in enumerate(candidates):
        if similarity < threshold:
            break
        if second_check:
            verdict = prompts_agree(prompt, entry.prompt)
            if not verdict.agree:
                reason = reason or f"second check: {verdict.reason}"
                continue
        if token_threshold is None:
            return position, ""
        eligible.append(position)
    if eligible and token_threshold is not None:
        if token_scores is None:
            raise ValueError("choose_hit needs token_scores when token_threshold is set")
        scores = list(token_scores(eligible))
        for position, score in zip(eligible, scores, strict=True):
            if score >= token_threshold:
                return position, ""
        return None, f"token check: agreement {max(scores):.3f} < {token_threshold}"
    if not reason:
        best = candidates[0][1] if candidates else 0.0
        reason = f"similarity {best:.3f} < {threshold}"
    return None, reason


class SemanticCache:
    """Answers to earlier prompts, scoped per tenant, model, system prompt and sampling.

    Thread-safe. Call :meth:`close` (or use it as a context manager) on shutdown so the
    indexes are written; after a crash they are repaired from SQLite on first use.
    """

    def __init__(
        self,
        directory: Path,
        *,
        embedder: Embedder | None = None,
        threshold: float | None = None,
        ttl_seconds: float | None = 7 * 24 * 3600,
        max_entries: int = 100_000,
        second_check: bool = True,
        token_threshold: float | None = DEFAULT_TOKEN_THRESHOLD,
        cache_sampled: bool = False,
        index_kind: str = "hnswlib",
        candidates: int = 5,
        storage_url: str | None = None,
        max_loaded_scopes: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if threshold is None:
            threshold = DEFAULT_THRESHOLD if token_threshold is None else TOKEN_CHECK_GATE
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"cache threshold must be in (0, 1], got {threshold}")
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ConfigError(f"cache ttl_seconds must be > 0 or None, got {ttl_seconds}")
        if max_entries < 1:
            raise ConfigError(f"cache max_entries must be >= 1, got {max_entries}")
        if index_kind not in INDEX_KINDS:
            raise ConfigError(
                f"unknown cache index {index_kind!r}; choose one of: {', '.join(INDEX_KINDS)}"
            )
        if candidates < 1:
            raise ConfigError(f"cache candidates must be >= 1, got {candidates}")
        if max_loaded_scopes < 1:
            raise ConfigError(f"cache max_loaded_scopes must be >= 1, got {max_loaded_scopes}")
        if token_threshold is not None and not 0.0 < token_threshold <= 1.0:
            raise ConfigError(f"cache token_threshold must be in (0, 1] or None, got {token_threshold}")
        self.directory = Path(directory)
        try:
            (self.directory / "index").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create the cache directory {self.directory}: {err}") from err
        self.embedder = embedder if embedder is not None else get_embedder()
        if token_threshold is not None and not isinstance(self.embedder, TokenEncoder):
            raise ConfigError(
                f"the token check needs an embedder with encode_tokens(); {self.embedder.name!r} "
                "has none: leave token_threshold=None"
            )
        self.threshold = threshold
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.second_check = second_check
        self.token_threshold = token_threshold
        self.cache_sampled = cache_sampled
        self.index_kind = index_kind
        self.candidates = candidates
        self.max_loaded_scopes = max_loaded_scopes
        self._clock = clock
        self._table = EntryTable(
            self.directory / "cache.db" if storage_url is None else parse_storage_url(storage_url)
        )
        # shared storage: per scope, the highest id indexed from the table, this replica's own
        # newer ids, and when the index was last compared in full with the table
        self._synced: dict[str, int] = {}
        self._ahead: dict[str, set[int]] = {}
        self._reconciled: dict[str, float] = {}
        # the loaded indexes, least recently used first: every conversation with its own
        # history is a scope, and an hnswlib index takes 2.6 MB however small (its 65,536
        # label locks, measured), so they are unloaded past max_loaded_scopes
        self._indexes: OrderedDict[str, VectorIndex] = OrderedDict()
        self._dirty: dict[str, int] = {}
        self._lock = threading.RLock()
        self._stores = 0
        # vectors of two encoders are not comparable: each encoder's entries get scopes of
        # their own, so replicas on different encoders can share one database
        self._encoder = embedder_identity(self.embedder)
        self._count = self._table.count()  # kept in step under self._lock

    # -- public API -------------------------------------------------------------------

    def lookup(
        self,
        scope: CacheScope,
        prompt: str,
        *,
        vector: np.ndarray | None = None,
        tokens: np.ndarray | None = None,
    ) -> CacheLookup:
        """Find a cached answer for ``prompt`` in ``scope`` (never in another scope).

        ``vector`` (and ``tokens``, its token vectors) may pass the prompt's embedding
        when the caller already has it (:meth:`embed`).
        """
        if self._bypassed(scope):
            return CacheLookup("bypass", reason=f"temperature {scope.temperature:g} > 0")
        scope = self._bound(scope)
        if vector is None:
            vectors, token_lists = self._embed_many([prompt], None, None)
            vector = vectors[0]
            if tokens is None and token_lists is not None:
                tokens = token_lists[0]
        candidates = self.nearest(scope, prompt, vector=vector)
        if not candidates:
            return CacheLookup("miss", reason="nothing cached in this scope")
        best = candidates[0][1]
        chosen, reason = choose_hit(
            prompt,
            candidates,
            self.threshold,
            self.second_check,
            token_threshold=self.token_threshold,
            token_scores=lambda positions: self._token_scores(
                prompt, tokens, [candidates[i][0] for i in positions]
            ),
        )
        if chosen is None:
            return CacheLookup("miss", best, reason=reason)
        entry, similarity = candidates[chosen]
        hit = self._table.record_hit(entry.id, self._clock()) or entry
        return CacheLookup("hit", similarity, hit)

    def nearest(
        self, scope: CacheScope, prompt: str, *, vector: np.ndarray | None = None
    ) -> list[tuple[CacheEntry, float]]:
        """Up to ``candidates`` live entries of ``scope`` nearest to ``prompt``, best first.

        Expired entries met on the way are deleted.
        """
        scope = self._bound(scope)
        query = self._embed(prompt, vector)
        with self._lock:
            index = self._index(scope.key)
            if self._table.shared:
                self._catch_up(scope.key, index)
            labels, sims = index.search(query, self.candidates)
        if not len(labels):
            return []
        entries = self._table.get_many([int(lab) for lab in labels])
        now = self._clock()
        found: list[tuple[CacheEntry, float]] = []
        expired: list[int] = []
        gone: list[int] = []
        for label, sim in zip(labels.tolist(), sims.tolist(), strict=True):
            entry = entries.get(label)
            if entry is None or entry.scope_key != scope.key:
                gone.append(label)  # deleted meanwhile by another thread or replica; ids are never reused
                continue
            if self._is_expired(entry, now):
                expired.append(label)
            else:
                found.append((entry, float(sim)))
        if gone:
            with self._lock:
                index.remove(np.array(gone, dtype=np.int64))
        if expired:
            with self._lock:
                self._drop([(i, scope.key) for i in expired])
        return found

    def store(
        self,
        scope: CacheScope,
        prompt: str,
        answer: str,
        usage: Mapping[str, Any] | None = None,
        *,
        vector: np.ndarray | None = None,
        tokens: np.ndarray | None = None,
    ) -> CacheEntry | None:
        """Keep ``answer`` for ``prompt`` in ``scope``; None when the scope is bypassed.

        Storing the same prompt again in the same scope replaces its answer.
        """
        vectors = None if vector is None else np.asarray(vector)[None, ...]
        stored = self.store_many(
            scope,
            [prompt],
            [answer],
            [usage or {}],
            vectors=vectors,
            tokens=None if tokens is None else [tokens],
        )
        return stored[0] if stored else None

    def store_many(
        self,
        scope: CacheScope,
        prompts: Sequence[str],
        answers: Sequence[str],
        usages: Sequence[Mapping[str, Any]] | None = None,
        *,
        vectors: np.ndarray | None = None,
        tokens: Sequence[np.ndarray] | None = None,
    ) -> list[CacheEntry]:
        """Store several answers in one scope in one transaction (e.g. to warm the cache).

        ``vectors`` and ``tokens`` (per prompt, its token vectors) may be given when the
        caller has them; token vectors are kept only while the token check is on.
        Returns the entries in order; an empty list when the scope is bypassed.
        """
        if len(prompts) != len(answers) or (usages is not None and len(usages) != len(prompts)):
            raise ValueError("prompts, answers and usages must have the same length")
        if any(not isinstance(a, str) for a in answers):
            raise TypeError("answers must be strings")
        if self._bypassed(scope) or not prompts:
            return []
        scope = self._bound(scope)
        embeddings, token_rows = self._embed_many(prompts, vectors, tokens)
        if self.token_threshold is None:
            token_rows = None  # nothing reads them: do not spend the disk
        now = self._clock()
        entries: list[CacheEntry] = []
        new_ids: list[int] = []
        new_rows: list[int] = []
        with self._lock:
            index = self._index(scope.key)
            with self._table.transaction():
                self._table.register_scope(
                    scope.key, scope.tenant, scope.model, scope.system_prompt_hash, scope.sampling
                )
                for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
                    entry, new = self._table.upsert(
                        scope.key,
                        sha256_hex(_normalise_prompt(prompt)),
                        prompt,
                        answer,
                        usages[row] if usages is not None else {},
                        embeddings[row],
                        now,
                        None if token_rows is None else token_rows[row],
                    )
                    entries.append(entry)
                    if new:
                        self._count += 1
                    if new and entry.id not in new_ids:
                        new_ids.append(entry.id)
                        new_rows.append(row)
            if new_ids:
                index.add(np.array(new_ids, dtype=np.int64), embeddings[new_rows])
                self._touch(scope.key, len(new_ids))
                if self._table.shared:
                    self._ahead.setdefault(scope.key, set()).update(new_ids)
            if self._table.shared:
                self._count = self._table.count()  # other replicas add and delete too
            before = self._stores
            self._stores += len(prompts)
            if before // _PURGE_EVERY != self._stores // _PURGE_EVERY:
                self.purge_expired()
            self._evict_over_limit()
        return entries

    def embed(self, prompts: list[str]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """The prompts' vectors and, while the token check is on, their token vectors,
        from one encoder run: what :meth:`lookup` and :meth:`store` take as ``vector``
        and ``tokens``."""
        if self.token_threshold is None:
            return self.embedder.encode(prompts), None
        assert isinstance(self.embedder, TokenEncoder)  # checked in __init__
        return self.embedder.encode_with_tokens(prompts)

    def entry_tokens(self, entries: Sequence[CacheEntry]) -> dict[int, np.ndarray]:
        """The stored token vectors of ``entries`` by id (as the token check reads them);
        entries stored without them are encoded now and keep the result."""
        if not isinstance(self.embedder, TokenEncoder):
            raise ConfigError(f"the encoder {self.embedder.name!r} gives no token vectors")
        found = self._table.tokens([e.id for e in entries], self.embedder.dim)
        missing = [e for e in entries if e.id not in found]
        if missing:
            computed = self.embedder.encode_tokens([e.prompt for e in missing])
            found.update(self._table.set_tokens({e.id: t for e, t in zip(missing, computed, strict=True)}))
        return found

    def purge_expired(self) -> int:
        """Delete entries older than the TTL; returns how many."""
        if self.ttl_seconds is None:
            return 0
        with self._lock:
            rows = self._table.expired(self._clock() - self.ttl_seconds)
            self._drop(rows)
        return len(rows)

    def __len__(self) -> int:
        if self._table.shared:
            return self._table.count()
        with self._lock:
            return self._count

    def count(self, scope: CacheScope) -> int:
        """Entries stored in one scope."""
        return self._table.count(self._bound(scope).key)

    def save(self) -> None:
        """Write every changed index to disk."""
        with self._lock:
            for key in list(self._dirty):
                self._indexes[key].save(self._index_path(key))
            self._dirty.clear()

    def close(self) -> None:
        """Save the indexes and close the database."""
        with self._lock:
            self.save()
            self._table.close()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------

    def _bound(self, scope: CacheScope) -> CacheScope:
        """``scope`` for this cache's encoder."""
        return scope if scope.encoder == self._encoder else replace(scope, encoder=self._encoder)

    def _bypassed(self, scope: CacheScope) -> bool:
        return scope.temperature > 0 and not self.cache_sampled

    def _token_scores(
        self, prompt: str, tokens: np.ndarray | None, entries: list[CacheEntry]
    ) -> list[float]:
        """Token agreement of ``prompt`` with each cached entry's prompt."""
        assert isinstance(self.embedder, TokenEncoder)  # checked in __init__
        question = tokens if tokens is not None else self.embedder.encode_tokens([prompt])[0]
        stored = self.entry_tokens(entries)
        return [token_agreement(question, stored[e.id]) for e in entries]

    def _embed(self, prompt: str, vector: np.ndarray | None) -> np.ndarray:
        vectors = None if vector is None else np.asarray(vector)[None, ...]
        return self._embed_many([prompt], vectors, None)[0][0]

    def _embed_many(
        self,
        prompts: Sequence[str],
        vectors: np.ndarray | None,
        tokens: Sequence[np.ndarray] | None,
    ) -> tuple[np.ndarray, Sequence[np.ndarray] | None]:
        """Vectors of ``prompts`` (given or encoded), and their token vectors when given or
        when the cache encodes the prompts itself with the token check on."""
        for prompt in prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError("prompt must be a non-empty string")
        if tokens is not None and len(tokens) != len(prompts):
            raise ValueError("tokens must hold one array per prompt")
        if vectors is None:
            encoded, computed = self.embed(list(prompts))
            return encoded, tokens if tokens is not None else computed
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(prompts), self.embedder.dim):
            raise ValueError(
                f"vector must have {self.embedder.dim} values per prompt, got shape {vectors.shape}"
            )
        return vectors, tokens

    def _is_expired(self, entry: CacheEntry, now: float) -> bool:
        return self.ttl_seconds is not None and now - entry.created > self.ttl_seconds

    def _index_path(self, scope_key: str) -> Path:
        return self.directory / "index" / f"{scope_key}.{self.index_kind}"

    def _index(self, scope_key: str) -> VectorIndex:
        """The scope's index, loaded (and repaired against SQLite) on first use."""
        index = self._indexes.get(scope_key)
        if index is not None:
            self._indexes.move_to_end(scope_key)
            return index
        path = self._index_path(scope_key)
        dim = self.embedder.dim
        index = None
        if path.exists():
            try:
                index = load_index(self.index_kind, path, dim)
            except (RuntimeError, OSError, ValueError):
                index = None  # unreadable file: rebuilt from SQLite below
        if index is None:
            index = make_index(self.index_kind, dim)
        self._repair(scope_key, index)
        self._indexes[scope_key] = index
        while len(self._indexes) > self.max_loaded_scopes:
            self._unload(next(iter(self._indexes)))
        return index

    def _unload(self, scope_key: str) -> None:
        """Write the scope's index if it changed and let it go; its next use reloads it."""
        index = self._indexes.pop(scope_key)
        if self._dirty.pop(scope_key, 0):
            index.save(self._index_path(scope_key))
        for state in (self._synced, self._ahead, self._reconciled):
            state.pop(scope_key, None)

    def _repair(self, scope_key: str, index: VectorIndex) -> None:
        """Make the index hold exactly the scope's stored entries."""
        stored = self._table.ids(scope_key)
        present = index.labels()
        stale = present - stored
        if stale:
            index.remove(np.fromiter(stale, dtype=np.int64, count=len(stale)))
        missing = stored - present
        if missing:
            for ids, vectors in self._table.vectors(scope_key, self.embedder.dim):
                keep = np.isin(ids, np.fromiter(missing, dtype=np.int64, count=len(missing)))
                index.add(ids[keep], vectors[keep])
        if stale or missing:
            self._dirty[scope_key] = self._dirty.get(scope_key, 0) + len(stale) + len(missing)
        self._synced[scope_key] = max(stored, default=0)
        self._ahead.pop(scope_key, None)
        self._reconciled[scope_key] = time.monotonic()

    def _catch_up(self, scope_key: str, index: VectorIndex) -> None:
        """Index the entries other replicas stored in the scope since this one last looked.

        Ids rise in insertion order, but a replica can commit a lower id after a higher one
        was seen; the full comparison every ``_RECONCILE_SECONDS`` picks such an entry up
        (until then it is only missed, never answered wrongly).
        """
        if time.monotonic() - self._reconciled.get(scope_key, 0.0) > _RECONCILE_SECONDS:
            self._repair(scope_key, index)
            return
        own = self._ahead.get(scope_key, set())
        synced = self._synced.get(scope_key, 0)
        for ids, vectors in self._table.vectors(scope_key, self.embedder.dim, after=synced):
            keep = np.array([i not in own for i in ids.tolist()], dtype=bool)
            if keep.any():
                index.add(ids[keep], vectors[keep])
                self._touch(scope_key, int(keep.sum()))
            synced = max(synced, int(ids[-1]))
        self._synced[scope_key] = synced
        if own:
            own.difference_update([i for i in own if i <= synced])

    def _touch(self, scope_key: str, changes: int = 1) -> None:
        self._dirty[scope_key] = self._dirty.get(scope_key, 0) + changes
        if self._dirty[scope_key] >= _AUTOSAVE_EVERY:
            self._indexes[scope_key].save(self._index_path(scope_key))
            del self._dirty[scope_key]

    def _drop(self, rows: list[tuple[int, str]]) -> None:
        """Delete entries from SQLite and from their (loaded) indexes."""
        by_scope: dict[str, list[int]] = {}
        for entry_id, scope_key in rows:
            by_scope.setdefault(scope_key, []).append(entry_id)
        self._count -= self._table.delete([entry_id for entry_id, _ in rows])
        for scope_key, ids in by_scope.items():
            index = self._indexes.get(scope_key)
            if index is not None:
                index.remove(np.array(ids, dtype=np.int64))
                self._touch(scope_key, len(ids))

    def _evict_over_limit(self) -> None:
        excess = self._count - self.max_entries
        if excess > 0:
            self._drop(self._table.least_recently_used(excess))
