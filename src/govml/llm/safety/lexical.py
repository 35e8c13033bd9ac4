"""A word and character n-gram model of toxic language: the ``toxic`` category of the
prompt guard and the output filter.

Why not the MiniLM head for this category: on the guard's held-out split (seed 0,
docs/llm-safety.md) the n-gram model catches 88% of held-out toxic tweets at 2.2% false
alarms on neutral tweets, where the head on sentence vectors caught 70% at 3.6%, and it
scores a text in about 0.5 ms, where the output filter paid an encoder run (6-10 ms for
a short answer, about 30 ms for a streamed 1,000-character window). Slurs and insults
are words; a mean-pooled sentence vector blurs them.

Features: scikit-learn's ``HashingVectorizer`` (stateless, so nothing but two arrays
ships) over words and word pairs and over character 2-5-grams within words; sublinear
tf-idf; one logistic regression. The arrays are stored as ``.npz`` with a JSON side-car
(no pickle) and rebuilt by ``govml llm train-guard``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from govml.errors import DataError
from govml.llm.safety.arrays import read_npz, write_npz

DEFAULT_TOXICITY_HEAD = Path(__file__).with_name("toxicity_head.npz")
FORMAT_VERSION = 1
HASH_FEATURES = 2**18  # per analyzer; collisions cost nothing measurable at 2**18
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
# Inverse regularisation, compared at 1, 4, 10 and 30 on the seed-0 split (docs/llm-safety.md)
LEXICAL_C = 10.0
_WORD_TOKEN = r"(?u)\b\w+\b"  # keeps one-letter words ("u", "a") that insults use
_FEATURES = {"hash_features": HASH_FEATURES, "word_ngrams": list(WORD_NGRAMS), "char_ngrams": list(CHAR_NGRAMS)}


@cache
def _vectorizers() -> tuple[object, object]:
    from sklearn.feature_extraction.text import HashingVectorizer

    common = {"n_features": HASH_FEATURES, "alternate_sign": False, "norm": None, "lowercase": True}
    words = HashingVectorizer(ngram_range=WORD_NGRAMS, token_pattern=_WORD_TOKEN, **common)
    chars = HashingVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, **common)
    return words, chars


def term_counts(texts: Sequence[str]) -> object:
    """Hashed counts of each text's n-grams, a sparse ``(n, 2 * HASH_FEATURES)`` matrix."""
    from scipy import sparse

    if isinstance(texts, str):
        raise TypeError("term_counts() takes a list of strings")
    words, chars = _vectorizers()
    return sparse.hstack([words.transform(texts), chars.transform(texts)], format="csr")  # type: ignore[attr-defined]


def _tfidf(counts: object, idf: np.ndarray) -> object:
    """Sublinear tf times idf, rows scaled to unit length: scikit-learn's
    ``TfidfTransformer(sublinear_tf=True)`` with a given ``idf_`` (tested equal)."""
    from sklearn.preprocessing import normalize

    x = counts.astype(np.float64)  # type: ignore[attr-defined]
    x.data = (np.log(x.data) + 1.0) * idf[x.indices]
    return normalize(x, norm="l2", copy=False)


@dataclass(frozen=True)
class LexicalHead:
    """``risk = sigmoid(tfidf(text) @ coef + intercept)``; toxic when ``risk >= threshold``."""

    idf: np.ndarray  # (2 * HASH_FEATURES,) float64
    coef: np.ndarray  # (2 * HASH_FEATURES,) float64
    intercept: float
    threshold: float
    metadata: dict[str, object] | None = None

    def __post_init__(self) -> None:
        expected = (2 * HASH_FEATURES,)
        if self.idf.shape != expected or self.coef.shape != expected:
            shapes = f"{self.idf.shape} and {self.coef.shape}"
            raise DataError(f"toxicity model: idf and coef need shape {expected}, got {shapes}")

    def risks(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of toxic language per text, shape ``(n,)``."""
        if not len(texts):
            return np.zeros(0)
        logits = _tfidf(term_counts(texts), self.idf) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def fit_lexical(
    texts: Sequence[str],
    toxic: Sequence[bool] | np.ndarray,
    *,
    threshold: float,
    sample_weight: Sequence[float] | np.ndarray | None = None,
    c: float = LEXICAL_C,
    metadata: dict[str, object] | None = None,
) -> LexicalHead:
    """Fit the model on ``texts``; the two classes get equal total weight, and
    ``sample_weight`` weighs rows within a class."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(toxic, dtype=bool)
    if y.sum() < 2 or (~y).sum() < 2:
        raise DataError("the toxicity model needs at least 2 toxic and 2 other texts")
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float).copy()
    if weight.shape != y.shape:
        raise ValueError("sample_weight needs one value per text")
    weight[y] *= weight[~y].sum() / weight[y].sum()
    counts = term_counts(list(texts))
    idf = TfidfTransformer(sublinear_tf=True).fit(counts).idf_
    model = LogisticRegression(C=c, max_iter=5000, tol=1e-6)
    model.fit(_tfidf(counts, idf), y.astype(int), sample_weight=weight)
    return LexicalHead(
        idf=np.asarray(idf, dtype=np.float64),
        coef=np.asarray(model.coef_[0], dtype=np.float64),
        intercept=float(model.intercept_[0]),
        threshold=float(threshold),
        metadata=metadata,
    )


def save_lexical(head: LexicalHead, path: Path) -> str:
    """Write ``path`` (.npz, same bytes for the same head) and its .json side-car; return
    the sha256 of the .npz. The arrays are stored as float32."""
    side = {
        "format_version": FORMAT_VERSION,
        "features": _FEATURES,
        "intercept": head.intercept,
        "threshold": head.threshold,
        "metadata": head.metadata or {},
    }
    arrays = {"idf": head.idf.astype(np.float32), "coef": head.coef.astype(np.float32)}
    return write_npz(Path(path), arrays, side)


def load_lexical(path: Path = DEFAULT_TOXICITY_HEAD) -> LexicalHead:
    """Read a model written by :func:`save_lexical`, checking the side-car's digest and
    that it was built with this module's features."""
    arrays, side = read_npz(path, what="toxicity model", format_version=FORMAT_VERSION)
    if side.get("features") != _FEATURES:
        built = side.get("features")
        raise DataError(f"{path}: built with features {built}, this govml uses {_FEATURES}; retrain it")
    return LexicalHead(
        idf=arrays["idf"].astype(np.float64),
        coef=arrays["coef"].astype(np.float64),
        intercept=float(side["intercept"]),
        threshold=float(side["threshold"]),
        metadata=side.get("metadata"),
    )
