"""Third layer of the prompt guard: one logistic-regression head per unsafe category
on sentence embeddings. The heads are stored as plain arrays (``.npz``) with a JSON
side-car, never as a pickle, and ship inside the package."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from govml.errors import DataError
from govml.llm.safety.arrays import read_npz, write_npz

DEFAULT_HEAD = Path(__file__).with_name("guard_head.npz")
FORMAT_VERSION = 1
# MiniLM reads at most 256 word pieces; longer prompts are scored window by window
# (about 150 words, overlapping by 50) and the highest risk counts, so an attack at the
# end of a long prompt is not cut off. A mean-pooled window still dilutes one harmful
# sentence in 140 benign words, so long prompts are also scored sentence by sentence,
# by the heads trained on sentence-sized examples only: the jailbreak head learnt whole
# templates, and on single sentences of long benign system prompts ("provide detailed
# responses without being overwhelming") it raised false alarms.
WINDOW_WORDS = 150
WINDOW_STRIDE = 100
SENTENCE_CATEGORIES = frozenset({"harmful", "toxic"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class GuardHead:
    """Per-category logistic heads: ``risk = sigmoid(x @ coef[k] + intercept[k])``;
    a category fires when its risk reaches ``thresholds[k]``."""

    categories: tuple[str, ...]
    coef: np.ndarray  # (k, d) float32
    intercept: np.ndarray  # (k,) float32
    thresholds: np.ndarray  # (k,) float32
    embedder: str = "minilm"
    metadata: dict[str, object] | None = None

    def __post_init__(self) -> None:
        k = len(self.categories)
        if self.coef.ndim != 2 or self.coef.shape[0] != k:
            raise DataError(f"guard head: coef has shape {self.coef.shape}, expected ({k}, d)")
        if self.intercept.shape != (k,) or self.thresholds.shape != (k,):
            raise DataError("guard head: intercept and thresholds need one value per category")

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def risks(self, vectors: np.ndarray) -> np.ndarray:
        """Risk in [0, 1] per row and category, shape ``(n, k)``."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {x.shape}")
        logits = x @ self.coef.T + self.intercept
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def text_windows(text: str, *, size: int = WINDOW_WORDS, stride: int = WINDOW_STRIDE) -> list[str]:
    """``text`` cut into overlapping windows of ``size`` words (one window if shorter)."""
    words = text.split()
    if len(words) <= size:
        return [text]
    starts = range(0, len(words) - size + stride, stride)
    return [" ".join(words[s : s + size]) for s in starts if s < len(words)]


def text_sentences(text: str, *, size: int = WINDOW_WORDS) -> list[str]:
    """The distinct sentences of ``text`` if it is longer than one window of ``size``
    words, else nothing (a short text is scored whole)."""
    if len(text.split()) <= size:
        return []
    sentences = (" ".join(part.split()) for part in _SENTENCE_END.split(text))
    return [s for s in dict.fromkeys(sentences) if s]


def save_head(head: GuardHead, path: Path) -> str:
    """Write ``path`` (.npz, fixed zip timestamps so equal heads give equal bytes) and
    ``path.with_suffix('.json')``; return the sha256 of the .npz."""
    arrays = {
        "coef": head.coef.astype(np.float32),
        "intercept": head.intercept.astype(np.float32),
        "thresholds": head.thresholds.astype(np.float32),
    }
    side = {
        "format_version": FORMAT_VERSION,
        "categories": list(head.categories),
        "embedder": head.embedder,
        "dim": head.dim,
        "metadata": head.metadata or {},
    }
    return write_npz(Path(path), arrays, side)


def load_head(path: Path = DEFAULT_HEAD) -> GuardHead:
    """Read a head written by :func:`save_head`, checking the side-car's digest."""
    arrays, side = read_npz(path, what="guard head", format_version=FORMAT_VERSION)
    return GuardHead(
        categories=tuple(side["categories"]),
        coef=arrays["coef"],
        intercept=arrays["intercept"],
        thresholds=arrays["thresholds"],
        embedder=side["embedder"],
        metadata=side.get("metadata"),
    )


def fit_head(
    vectors: np.ndarray,
    labels: Sequence[str],
    categories: Sequence[str],
    *,
    thresholds: Sequence[float],
    safe_label: str = "safe",
    c: float = 1.0,
    sample_weight: np.ndarray | Sequence[float] | None = None,
    embedder: str = "minilm",
    metadata: dict[str, object] | None = None,
) -> GuardHead:
    """Fit one logistic regression per category, each on that category's examples
    against the safe ones (other unsafe categories are left out). ``sample_weight``
    (default all 1) weighs rows within a class; the two classes always get equal total
    weight."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(labels)
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    if weight.shape != y.shape:
        raise ValueError("sample_weight needs one value per row")
    safe = y == safe_label
    if not safe.any():
        raise DataError("training data holds no safe examples")
    coefs, intercepts = [], []
    for category in categories:
        positive = y == category
        if positive.sum() < 2:
            raise DataError(f"training data holds fewer than 2 examples of {category!r}")
        rows = positive | safe
        w = weight[rows].copy()
        target = positive[rows]
        w[target] *= w[~target].sum() / w[target].sum()
        model = LogisticRegression(C=c, max_iter=3000, tol=1e-6)
        model.fit(x[rows], target.astype(int), sample_weight=w)
        coefs.append(model.coef_[0])
        intercepts.append(model.intercept_[0])
    return GuardHead(
        categories=tuple(categories),
        coef=np.asarray(coefs, dtype=np.float32),
        intercept=np.asarray(intercepts, dtype=np.float32),
        thresholds=np.asarray(thresholds, dtype=np.float32),
        embedder=embedder,
        metadata=metadata,
    )
