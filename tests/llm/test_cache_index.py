"""Every cache index kind through the same checks (the VectorIndex contract)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from govml.llm.cache.index import INDEX_KINDS, VectorIndex, load_index, make_index

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=INDEX_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_satisfies_protocol_and_starts_empty(kind: str) -> None:
    index = make_index(kind, DIM)
    assert isinstance(index, VectorIndex)
    assert len(index) == 0 and index.dim == DIM
    labels, sims = index.search(np.ones(DIM, dtype=np.float32) / 4, 3)
    assert labels.size == 0 and sims.size == 0


def test_finds_each_vector_itself_with_cosine_one(kind: str) -> None:
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 300)
    index = make_index(kind, DIM)
    index.add(np.arange(100, 400), vectors)
    assert len(index) == 300
    for i in range(0, 300, 37):
        labels, sims = index.search(vectors[i], 3)
        assert labels[0] == 100 + i
        assert sims[0] == pytest.approx(1.0, abs=1e-4)
        assert list(sims) == sorted(sims, reverse=True)


def test_grows_past_initial_capacity(kind: str) -> None:
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 2500)
    index = make_index(kind, DIM)
    for start in range(0, 2500, 500):
        index.add(np.arange(start, start + 500), vectors[start : start + 500])
    assert len(index) == 2500
    assert index.search(vectors[2499], 1)[0][0] == 2499


def test_removed_labels_are_never_returned_and_slots_reused(kind: str) -> None:
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 50)
    index = make_index(kind, DIM)
    index.add(np.arange(50), vectors)
    index.remove(np.arange(0, 50, 2))
    index.remove(np.array([999]))  # unknown: ignored
    assert len(index) == 25
    assert index.labels() == set(range(1, 50, 2))
    for i in range(0, 50, 2):
        labels, _ = index.search(vectors[i], 10)
        assert not set(labels.tolist()) & set(range(0, 50, 2))
    more = _unit(rng, 25)
    index.add(np.arange(1000, 1025), more)
    assert len(index) == 50
    assert index.search(more[3], 1)[0][0] == 1003


def test_save_and_load_keep_contents(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 40)
    index = make_index(kind, DIM)
    index.add(np.arange(40), vectors)
    index.remove(np.array([5, 6]))
    path = tmp_path / f"scope.{kind}"
    index.save(path)
    loaded = load_index(kind, path, DIM)
    assert loaded.labels() == set(range(40)) - {5, 6}
    assert loaded.search(vectors[7], 1)[0][0] == 7
    assert 5 not in loaded.search(vectors[5], 5)[0].tolist()


def test_mismatched_labels_and_vectors_are_refused(kind: str) -> None:
    index = make_index(kind, DIM)
    with pytest.raises(ValueError, match="labels"):
        index.add(np.arange(3), _unit(np.random.default_rng(4), 2))


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hnswlib"):
        make_index("annoy", DIM)
    with pytest.raises(ValueError, match="hnswlib"):
        load_index("annoy", tmp_path / "x", DIM)


def test_a_small_scope_is_searched_exactly_and_grows_into_a_graph(tmp_path: Path) -> None:
    from govml.llm.cache.index import GrowingIndex, HnswlibIndex

    rng = np.random.default_rng(5)
    vectors = _unit(rng, 40)
    index = GrowingIndex(DIM, graph_from=30)
    index.add(np.arange(20), vectors[:20])
    index.remove(np.array([3, 999]))
    assert index.graph is None and len(index) == 19
    exact = np.argsort(-(vectors[:20] @ vectors[7]))
    labels, sims = index.search(vectors[7], 5)
    assert labels.tolist() == [i for i in exact.tolist() if i != 3][:5]
    np.testing.assert_allclose(sims, np.sort(vectors[labels] @ vectors[7])[::-1], rtol=1e-5)
    index.save(tmp_path / "small.hnswlib")
    reloaded = GrowingIndex.load(tmp_path / "small.hnswlib", DIM)
    assert reloaded.graph is None and reloaded.labels() == index.labels()
    index.add(np.arange(20, 40), vectors[20:])  # 39 live: past graph_from
    assert isinstance(index.graph, HnswlibIndex) and len(index) == 39 and 3 not in index.labels()
    assert index.search(vectors[35], 1)[0][0] == 35
    index.remove(np.arange(10, 40))
    assert index.graph is not None and len(index) == 9  # the graph stays
    index.save(tmp_path / "big.hnswlib")
    assert not (tmp_path / "big.hnswlib").read_bytes().startswith(b"PK")
    assert GrowingIndex.load(tmp_path / "big.hnswlib", DIM).labels() == index.labels()
    # an index file written by the graph alone (govml before GrowingIndex) still loads
    graph = HnswlibIndex(DIM)
    graph.add(np.arange(5), vectors[:5])
    graph.save(tmp_path / "old.hnswlib")
    assert GrowingIndex.load(tmp_path / "old.hnswlib", DIM).search(vectors[2], 1)[0][0] == 2


def test_many_one_entry_scopes_stay_small(tmp_path: Path) -> None:
    from govml.llm.cache import CacheScope, SemanticCache
    from govml.llm.embedding import get_embedder

    embedder = get_embedder("minilm")
    (vector,), (tokens,) = embedder.encode_with_tokens(["How do I reset my password?"])  # type: ignore[attr-defined]
    with SemanticCache(tmp_path, embedder=embedder, max_loaded_scopes=50) as cache:
        scopes = [
            CacheScope.for_request(api_key="k", model="m", system_prompt=f"chat {i}", sampling={"temperature": 0})
            for i in range(120)
        ]
        for s in scopes:
            answer = f"answer {s.system_prompt_hash[:6]}"
            cache.store(s, "How do I reset my password?", answer, vector=vector, tokens=tokens)
        assert len(cache._indexes) == 50  # the least recently used were written and let go
        assert all(getattr(i, "graph", 1) is None for i in cache._indexes.values())  # no 2.6 MB graphs
        found = cache.lookup(scopes[0], "How can I reset my password?")  # reloaded from its file
        assert found.hit and found.entry is not None and found.entry.answer.endswith(scopes[0].system_prompt_hash[:6])
