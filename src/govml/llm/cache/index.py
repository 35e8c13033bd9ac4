"""Vector indexes for the semantic cache: one small contract, three implementations.

``HnswlibIndex`` (approximate) was chosen by measurement: at 100,000 entries its lookup
p50 is ~0.25 ms against ~40 ms for exact search, inserts cost ~1 ms, and it supports
deletion with slot reuse (docs/llm-cache.md). But one hnswlib index takes 2.6 MB
however few vectors it holds (its 65,536 label locks, measured), and every conversation
with its own history is a cache scope with its own index, so the default kind,
``GrowingIndex``, searches a scope exactly with numpy until it holds
:data:`GRAPH_FROM` vectors and only then builds the graph. ``FaissFlatIndex`` is exact
and is kept as the reference the approximate index is checked against.
Vectors are L2-normalised, so inner product is cosine similarity. Neither class is
thread-safe by itself: the cache serialises calls per index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "INDEX_KINDS",
    "GRAPH_FROM",
    "FaissFlatIndex",
    "GrowingIndex",
    "HnswlibIndex",
    "VectorIndex",
    "load_index",
    "make_index",
]


@runtime_checkable
class VectorIndex(Protocol):
    """Nearest neighbours by cosine over integer-labelled unit vectors."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int:
        """Number of live (not removed) vectors."""
        ...

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under new int64 labels (labels must not be present)."""
        ...

    def remove(self, labels: np.ndarray) -> None:
        """Remove labels; unknown labels are ignored."""
        ...

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels and cosine similarities of up to ``k`` nearest vectors, best first."""
        ...

    def labels(self) -> set[int]:
        """The live labels."""
        ...

    def save(self, path: Path) -> None:
        """Write the index to ``path`` (atomically)."""
        ...


def _check_vectors(
    vectors: np.ndarray, labels: np.ndarray, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
    labels = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(vectors):
        raise ValueError(f"{len(labels)} labels for {len(vectors)} vectors")
    return labels, vectors


class HnswlibIndex:
    """HNSW graph (hnswlib) with deletion by marking and reuse of deleted slots."""

    def __init__(
        self,
        dim: int,
        *,
        m: int = 32,
        ef_construction: int = 100,
        ef_search: int = 64,
        initial_capacity: int = 1024,
    ) -> None:
        import hnswlib

        self._dim = dim
        self._ef_search = ef_search
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(
            max_elements=initial_capacity,
            M=m,
            ef_construction=ef_construction,
            allow_replace_deleted=True,
        )
        self._configure()
        self._live: set[int] = set()

    def _configure(self) -> None:
        self._index.set_ef(self._ef_search)
        # the server calls us from a thread pool already; one thread per call
        self._index.set_num_threads(1)

    @classmethod
    def load(cls, path: Path, dim: int, *, ef_search: int = 64) -> HnswlibIndex:
        """Read an index written by :meth:`save`."""
        import hnswlib

        self = cls.__new__(cls)
        self._dim = dim
        self._ef_search = ef_search
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.load_index(str(path), allow_replace_deleted=True)
        self._configure()
        labels = path.with_suffix(".labels.npy")
        self._live = set(np.load(labels).tolist()) if labels.exists() else set()
        return self

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._live)

    def labels(self) -> set[int]:
        """The live labels."""
        return set(self._live)

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = _check_vectors(vectors, labels, self._dim)
        if not len(labels):
            return
        needed = self._index.get_current_count() + len(labels)
        capacity = self._index.get_max_elements()
        deleted = self._index.get_current_count() - len(self._live)
        if needed - deleted > capacity:
            self._index.resize_index(max(2 * capacity, needed))
        self._index.add_items(vectors, labels, num_threads=1, replace_deleted=deleted > 0)
        self._live.update(int(x) for x in labels)

    def remove(self, labels: np.ndarray) -> None:
        for label in np.asarray(labels, dtype=np.int64).reshape(-1).tolist():
            if label in self._live:
                self._index.mark_deleted(label)
                self._live.discard(label)

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self._live))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self._dim)
        # with many deleted slots hnswlib can find fewer than k live neighbours
        while True:
            try:
                labels, distances = self._index.knn_query(query, k=k, num_threads=1)
                break
            except RuntimeError:
                if k == 1:
                    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
                k = max(1, k // 2)
        # hnswlib's "ip" distance is 1 - <a, b>
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        self._index.save_index(str(tmp))
        labels_tmp = path.with_suffix(".labels.tmp.npy")
        np.save(labels_tmp, np.fromiter(self._live, dtype=np.int64, count=len(self._live)))
        labels_tmp.replace(path.with_suffix(".labels.npy"))
        tmp.replace(path)


#: vectors at which a scope's exact search gives way to an hnswlib graph: below it a
#: search is one small matrix product (~0.15 ms at 2,048) and the vectors take less
#: memory than the graph's fixed 2.6 MB
GRAPH_FROM = 2048
_NPZ_MAGIC = b"PK\x03\x04"


class GrowingIndex:
    """Exact search (numpy) for a small scope, an :class:`HnswlibIndex` once it holds
    :data:`GRAPH_FROM` vectors; the graph stays when the scope shrinks again."""

    def __init__(self, dim: int, *, graph_from: int = GRAPH_FROM) -> None:
        self._dim = dim
        self._graph_from = graph_from
        self._labels = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self.graph: HnswlibIndex | None = None

    @classmethod
    def load(cls, path: Path, dim: int) -> GrowingIndex:
        """Read a file written by :meth:`save` (or by :class:`HnswlibIndex`)."""
        self = cls(dim)
        with path.open("rb") as head:
            small = head.read(4) == _NPZ_MAGIC
        if not small:
            self.graph = HnswlibIndex.load(path, dim)
            return self
        with np.load(path, allow_pickle=False) as saved:
            labels, vectors = _check_vectors(saved["vectors"], saved["labels"], dim)
        self._labels, self._vectors = labels, vectors
        return self

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self.graph) if self.graph is not None else len(self._labels)

    def labels(self) -> set[int]:
        return self.graph.labels() if self.graph is not None else set(self._labels.tolist())

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if self.graph is not None:
            self.graph.add(labels, vectors)
            return
        labels, vectors = _check_vectors(vectors, labels, self._dim)
        self._labels = np.concatenate([self._labels, labels])
        self._vectors = np.concatenate([self._vectors, vectors])
        if len(self._labels) >= self._graph_from:
            self.graph = HnswlibIndex(self._dim, initial_capacity=2 * len(self._labels))
            self.graph.add(self._labels, self._vectors)
            self._labels = np.zeros(0, dtype=np.int64)
            self._vectors = np.zeros((0, self._dim), dtype=np.float32)

    def remove(self, labels: np.ndarray) -> None:
        if self.graph is not None:
            self.graph.remove(labels)
            return
        keep = ~np.isin(self._labels, np.asarray(labels, dtype=np.int64).reshape(-1))
        self._labels, self._vectors = self._labels[keep], self._vectors[keep]

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.graph is not None:
            return self.graph.search(vector, k)
        k = min(k, len(self._labels))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        sims = self._vectors @ np.ascontiguousarray(vector, dtype=np.float32).reshape(self._dim)
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        return self._labels[top], sims[top].astype(np.float32)

    def save(self, path: Path) -> None:
        if self.graph is not None:
            self.graph.save(path)
            return
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, labels=self._labels, vectors=self._vectors)
        tmp.replace(path)
        path.with_suffix(".labels.npy").unlink(missing_ok=True)  # a graph's, from before


class FaissFlatIndex:
    """Exact inner-product search (FAISS ``IndexIDMap2(IndexFlatIP)``)."""

    def __init__(self, dim: int) -> None:
        import faiss

        self._dim = dim
        # typed Any: faiss's stubs miss the numpy overloads its Python wrapper adds
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @classmethod
    def load(cls, path: Path, dim: int) -> FaissFlatIndex:
        """Read an index written by :meth:`save`."""
        import faiss

        self = cls.__new__(cls)
        self._dim = dim
        self._index = faiss.read_index(str(path))
        return self

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def labels(self) -> set[int]:
        """The live labels."""
        import faiss

        return set(faiss.vector_to_array(self._index.id_map).tolist())

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = _check_vectors(vectors, labels, self._dim)
        if len(labels):
            self._index.add_with_ids(vectors, labels)

    def remove(self, labels: np.ndarray) -> None:
        self._index.remove_ids(np.ascontiguousarray(labels, dtype=np.int64).reshape(-1))

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self._dim)
        sims, labels = self._index.search(query, k)
        return labels[0].astype(np.int64), sims[0].astype(np.float32)

    def save(self, path: Path) -> None:
        import faiss

        tmp = path.with_suffix(".tmp")
        faiss.write_index(self._index, str(tmp))
        tmp.replace(path)


#: index kind -> implementation; the cache takes one of these names
INDEX_KINDS = ("hnswlib", "faiss-flat")


def make_index(kind: str, dim: int) -> GrowingIndex | FaissFlatIndex:
    """A new empty index of the given kind ("hnswlib": exact while small, then a graph)."""
    if kind == "hnswlib":
        return GrowingIndex(dim)
    if kind == "faiss-flat":
        return FaissFlatIndex(dim)
    raise ValueError(f"unknown index kind {kind!r}; choose one of: {', '.join(INDEX_KINDS)}")


def load_index(kind: str, path: Path, dim: int) -> GrowingIndex | FaissFlatIndex:
    """Read an index of the given kind from ``path``."""
    if kind == "hnswlib":
        return GrowingIndex.load(path, dim)
    if kind == "faiss-flat":
        return FaissFlatIndex.load(path, dim)
    raise ValueError(f"unknown index kind {kind!r}; choose one of: {', '.join(INDEX_KINDS)}")
