"""Two gateway replicas sharing the semantic cache in one real PostgreSQL database.

Each replica is a SemanticCache with its own local index folder and the same
``storage_url``: what one stores the other finds, tenants stay apart, and what one
deletes (TTL, eviction) the other never serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from govml.llm.cache import SemanticCache
from govml.llm.embedding import Embedder, get_embedder
from tests.llm.test_cache import Clock, scope
from tests.scale.test_storage import postgres_url


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder("minilm")


@pytest.fixture
def replicas(postgres, tmp_path: Path, embedder: Embedder) -> Iterator[Callable[..., SemanticCache]]:  # type: ignore[no-untyped-def]
    """Make replicas on one fresh database; each has its own index folder, all share the clock."""
    import psycopg

    url = postgres_url(postgres, "cache_replicas")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS entries, scopes")
    made: list[SemanticCache] = []
    clock = Clock()

    def make(**options: object) -> SemanticCache:
        options.setdefault("embedder", embedder)
        cache = SemanticCache(tmp_path / f"replica-{len(made)}", storage_url=url, clock=clock, **options)  # type: ignore[arg-type]
        made.append(cache)
        return cache

    make.clock = clock  # type: ignore[attr-defined]
    make.url = url  # type: ignore[attr-defined]
    yield make
    for cache in made:
        cache.close()


def test_one_stores_the_other_hits(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas(), replicas()
    s = scope()
    assert b.lookup(s, "How can I reset my password?").status == "miss"  # b has loaded the (empty) scope
    stored = a.store(s, "How do I reset my password?", "Click 'Forgot password'.", {"total_tokens": 9})
    found = b.lookup(s, "How can I reset my password?")
    assert found.hit and found.entry is not None
    assert found.entry.id == stored.id and found.entry.answer == "Click 'Forgot password'."
    assert found.entry.hits == 1
    # b's own store gets an id from the same sequence, and a finds it in turn
    other = b.store(s, "What are your opening hours?", "9 to 5.")
    assert other is not None and other.id > stored.id
    again = a.lookup(s, "what are your opening hours?")
    assert again.hit and again.entry is not None and again.entry.id == other.id
    assert len(a) == len(b) == 2
    # a replaced answer is read from the table, not from what a replica kept
    a.store(s, "What are your opening hours?", "8 to 6.")
    assert b.lookup(s, "What are your opening hours?").entry.answer == "8 to 6."


def test_tenants_stay_apart(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas(), replicas()
    a.store(scope("key-a"), "How do I reset my password?", "tenant A's answer")
    assert b.lookup(scope("key-b"), "How do I reset my password?").status == "miss"
    assert b.lookup(scope("key-a"), "How do I reset my password?").entry.answer == "tenant A's answer"
    assert b.count(scope("key-b")) == 0 and b.count(scope("key-a")) == 1


def test_ttl_deletion_by_one_is_seen_by_the_other(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas(ttl_seconds=60), replicas(ttl_seconds=60)
    s = scope()
    a.store(s, "How do I reset my password?", "old")
    assert b.lookup(s, "How do I reset my password?").hit
    replicas.clock.now += 61
    assert a.purge_expired() == 1
    found = b.lookup(s, "How do I reset my password?")
    assert found.status == "miss" and found.entry is None
    assert len(b) == 0


def test_eviction_by_one_is_seen_by_the_other(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas(max_entries=2), replicas(max_entries=2)
    s = scope()
    a.store(s, "How do I reset my password?", "1")
    replicas.clock.now += 1
    b.store(s, "What are your opening hours?", "2")
    replicas.clock.now += 1
    assert b.lookup(s, "How do I reset my password?").hit  # b indexes a's entry; now the newest hit
    replicas.clock.now += 1
    a.store(s, "Where is my parcel?", "3")  # over the limit: a evicts the least recently used, b's
    assert len(a) == len(b) == 2
    gone = b.lookup(s, "What are your opening hours?")
    assert gone.status == "miss" and gone.entry is None
    assert a.lookup(s, "What are your opening hours?").status == "miss"
    assert b.lookup(s, "Where is my parcel?").entry.answer == "3"


def test_a_restarted_replica_catches_up_from_its_index_file(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas(), replicas()
    s = scope()
    a.store(s, "How do I reset my password?", "1")
    assert b.lookup(s, "How do I reset my password?").hit
    b.close()  # writes b's index file
    a.store(s, "What are your opening hours?", "2")
    a.purge_expired()
    c = SemanticCache(b.directory, embedder=b.embedder, storage_url=replicas.url, clock=replicas.clock)
    try:
        assert c.lookup(s, "What are your opening hours?").entry.answer == "2"
        assert c.lookup(s, "How do I reset my password?").entry.answer == "1"
    finally:
        c.close()


def test_replicas_on_two_encoders_keep_both_sets_of_entries(replicas) -> None:  # type: ignore[no-untyped-def]
    # a rolling upgrade: one replica already runs another encoder build; before, each
    # opening wiped the other's entries
    s = scope()
    old = replicas(embedder=get_embedder("minilm-packaged-int8"))
    new = replicas()
    old.store(s, "How do I reset my password?", "old replica's answer")
    new.store(s, "How do I reset my password?", "new replica's answer")
    third = replicas()  # another replica on the new encoder, opened after both stored
    assert old.lookup(s, "How can I reset my password?").entry.answer == "old replica's answer"
    assert new.lookup(s, "How can I reset my password?").entry.answer == "new replica's answer"
    assert third.lookup(s, "How can I reset my password?").entry.answer == "new replica's answer"
    assert len(third) == 2
