"""Measuring the cache on paraphrase pairs: hit rate, hit precision, false hits.

Protocol (the issue's): cache the origins of a random half of the pairs, ask every
paraphrase. A paraphrase is *answerable* when its origin or a twin of its origin is
cached; a twin is another origin at cosine >= ``twin_similarity`` (0.95: the same
statement stored twice in other words, see the data README) *as measured by
all-MiniLM-L6-v2* (the README's rule; pass ``twin_embedder`` so that an evaluated
encoder does not redefine what counts as correct). A hit is *correct* when it returns
the origin or one of its twins.
- hit rate: correct hits / answerable questions
- hit precision: correct hits / all hits
- false-hit rate: hits / questions that are not answerable
The questions are asked through the real cache (hnswlib, SQLite, second check); the
token vectors of every question, and of every cached prompt as the cache stores them
(int8), are kept so that the token check can be applied at any threshold without
encoding again.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from govml.errors import DataError
from govml.llm.cache.agreement import token_agreement
from govml.llm.cache.entries import CacheEntry
from govml.llm.cache.scope import CacheScope
from govml.llm.cache.semantic import DEFAULT_TOKEN_THRESHOLD, SemanticCache, choose_hit
from govml.llm.embedding import Embedder, TokenEncoder

__all__ = [
    "BadHit",
    "CurvePoint",
    "ParaphraseOutcomes",
    "ParaphrasePair",
    "ask_paraphrases",
    "bad_hits",
    "curve",
    "load_paraphrase_pairs",
]


@dataclass(frozen=True)
class ParaphrasePair:
    origin: str
    similar: str


@dataclass(frozen=True)
class CurvePoint:
    """The cache's quality at one threshold, with or without the second check."""

    threshold: float
    second_check: bool
    token_threshold: float | None
    hit_rate: float
    precision: float
    false_hit_rate: float
    hits: int
    answerable: int
    unanswerable: int


@dataclass(frozen=True)
class ParaphraseOutcomes:
    """What the cache returned for every paraphrase, before any threshold is applied."""

    questions: list[str]
    candidates: list[list[tuple[CacheEntry, float]]]
    answerable: np.ndarray  # bool per question
    correct_ids: list[frozenset[int]]  # entry ids that answer each question correctly
    question_tokens: list[np.ndarray] | None = None  # per question, its token vectors
    entry_tokens: dict[int, np.ndarray] | None = None  # per cached entry id, its token vectors
    origin_vectors: np.ndarray | None = None  # per pair, its origin by the answer key's encoder
    origin_of_entry: dict[int, int] | None = None  # cached entry id -> its pair

    def token_score(self, question: int, entry_id: int) -> float:
        """Token agreement of one question with one cached entry."""
        if self.question_tokens is None or self.entry_tokens is None:
            raise ValueError("these outcomes were measured with an encoder without token vectors")
        return token_agreement(self.question_tokens[question], self.entry_tokens[entry_id])


def load_paraphrase_pairs(path: Path) -> list[ParaphrasePair]:
    """Read a JSON list of ``{"origin": ..., "similar": ...}``."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read paraphrase pairs from {path}: {err}") from err
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a JSON list of objects")
    pairs = []
    for i, item in enumerate(raw):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("origin"), str)
            and isinstance(item.get("similar"), str)
        ):
            raise DataError(f"{path}: item {i} needs string fields 'origin' and 'similar'")
        pairs.append(ParaphrasePair(item["origin"], item["similar"]))
    if len(pairs) < 2:
        raise DataError(f"{path}: needs at least 2 pairs, found {len(pairs)}")
    return pairs


def ask_paraphrases(
    pairs: Sequence[ParaphrasePair],
    embedder: Embedder,
    *,
    seed: int = 0,
    cached_fraction: float = 0.5,
    twin_similarity: float = 0.95,
    candidates: int = 5,
    index_kind: str = "hnswlib",
    twin_embedder: Embedder | None = None,
) -> ParaphraseOutcomes:
    """Cache a random part of the origins, ask every paraphrase, keep the candidates.

    ``twin_embedder`` decides which origins are twins (default: ``embedder``); give the
    MiniLM embedder when ``embedder`` is another model, so the answer key stays fixed.
    """
    if not 0 < cached_fraction < 1:
        raise ValueError(f"cached_fraction must be in (0, 1), got {cached_fraction}")
    n = len(pairs)
    origin_tokens = question_tokens = None
    if isinstance(embedder, TokenEncoder):
        origins, origin_tokens = embedder.encode_with_tokens([p.origin for p in pairs])
        similars, question_tokens = embedder.encode_with_tokens([p.similar for p in pairs])
    else:
        origins = embedder.encode([p.origin for p in pairs])
        similars = embedder.encode([p.similar for p in pairs])
    cached = np.zeros(n, dtype=bool)
    cached[np.random.default_rng(seed).permutation(n)[: max(1, int(n * cached_fraction))]] = True
    reference = origins
    if twin_embedder is not None and twin_embedder.name != embedder.name:
        reference = twin_embedder.encode([p.origin for p in pairs])
    twins = (reference @ reference.T) >= twin_similarity  # includes each origin itself
    scope = CacheScope.for_request(api_key="eval", model="eval", sampling={"temperature": 0})
    with tempfile.TemporaryDirectory(prefix="govml-cache-eval-") as folder:
        cache = SemanticCache(
            Path(folder),
            embedder=embedder,
            ttl_seconds=None,
            max_entries=max(n, 1),
            candidates=candidates,
            index_kind=index_kind,
            token_threshold=None if origin_tokens is None else DEFAULT_TOKEN_THRESHOLD,
        )
        rows = np.flatnonzero(cached).tolist()
        entries = cache.store_many(
            scope,
            [pairs[i].origin for i in rows],
            [f"answer {i}" for i in rows],
            vectors=origins[rows],
            tokens=None if origin_tokens is None else [origin_tokens[i] for i in rows],
        )
        entry_of = {i: entry.id for i, entry in zip(rows, entries, strict=True)}
        found = [cache.nearest(scope, pairs[i].similar, vector=similars[i]) for i in range(n)]
        # the cached prompts' token vectors as the cache keeps them (int8), not as encoded
        entry_tokens = None if origin_tokens is None else cache.entry_tokens(entries)
        cache.close()
    correct = [
        frozenset(entry_of[j] for j in np.flatnonzero(twins[i] & cached).tolist()) for i in range(n)
    ]
    return ParaphraseOutcomes(
        questions=[p.similar for p in pairs],
        candidates=found,
        answerable=np.array([bool(c) for c in correct]),
        correct_ids=correct,
        question_tokens=question_tokens,
        entry_tokens=entry_tokens,
        origin_vectors=reference,
        origin_of_entry={entry_id: i for i, entry_id in entry_of.items()},
    )


def _token_scores(
    outcomes: ParaphraseOutcomes,
    question: int,
    candidates: list[tuple[CacheEntry, float]],
    positions: list[int],
) -> list[float]:
    return [outcomes.token_score(question, candidates[k][0].id) for k in positions]


def _served(
    outcomes: ParaphraseOutcomes, question: int, threshold: float, second_check: bool, token_threshold: float | None
) -> int | None:
    """The entry id the cache serves for one question at these settings, or None."""
    cands = outcomes.candidates[question]
    pick, _ = choose_hit(
        outcomes.questions[question],
        cands,
        threshold,
        second_check,
        token_threshold=token_threshold,
        token_scores=partial(_token_scores, outcomes, question, cands),
    )
    return None if pick is None else cands[pick][0].id


def curve(
    outcomes: ParaphraseOutcomes,
    thresholds: Sequence[float],
    *,
    second_check: bool,
    questions: Sequence[int] | None = None,
    token_threshold: float | None = None,
) -> list[CurvePoint]:
    """Hit rate, precision and false-hit rate per threshold over some (or all) questions.

    With ``token_threshold``, the token check applies too (the cache's default).
    """
    chosen_ids = range(len(outcomes.questions)) if questions is None else questions
    answerable = [i for i in chosen_ids if outcomes.answerable[i]]
    unanswerable = [i for i in chosen_ids if not outcomes.answerable[i]]
    points = []
    for threshold in thresholds:
        correct_hits = false_hits = wrong_hits = 0
        for i in chosen_ids:
            served = _served(outcomes, i, threshold, second_check, token_threshold)
            if served is None:
                continue
            if not outcomes.answerable[i]:
                false_hits += 1
            elif served in outcomes.correct_ids[i]:
                correct_hits += 1
            else:
                wrong_hits += 1
        hits = correct_hits + false_hits + wrong_hits
        points.append(
            CurvePoint(
                threshold=float(threshold),
                second_check=second_check,
                token_threshold=token_threshold,
                hit_rate=correct_hits / max(1, len(answerable)),
                precision=correct_hits / hits if hits else 1.0,
                false_hit_rate=false_hits / max(1, len(unanswerable)),
                hits=hits,
                answerable=len(answerable),
                unanswerable=len(unanswerable),
            )
        )
    return points


@dataclass(frozen=True)
class BadHit:
    """A hit the answer key counts against the cache: ``wrong`` (another origin served
    though the question's own, or a twin, is cached) or ``false`` (nothing correct is
    cached). ``similarity`` is the cosine, by the answer key's encoder, between the
    served origin and the question's own origin: near 0.95 they state the same thing in
    other words (the key's twin line), far below it they do not."""

    question: int
    kind: str
    served: int  # the pair whose origin was served
    similarity: float


def bad_hits(
    outcomes: ParaphraseOutcomes,
    threshold: float,
    *,
    second_check: bool = True,
    token_threshold: float | None = None,
    questions: Sequence[int] | None = None,
) -> list[BadHit]:
    """The hits at one setting that are not correct, most alike to the own origin first."""
    if outcomes.origin_vectors is None or outcomes.origin_of_entry is None:
        raise ValueError("these outcomes do not keep the origins' vectors")
    out = []
    for i in range(len(outcomes.questions)) if questions is None else questions:
        served = _served(outcomes, i, threshold, second_check, token_threshold)
        if served is None or served in outcomes.correct_ids[i]:
            continue
        pair = outcomes.origin_of_entry[served]
        similarity = float(outcomes.origin_vectors[i] @ outcomes.origin_vectors[pair])
        out.append(BadHit(i, "wrong" if outcomes.answerable[i] else "false", pair, similarity))
    return sorted(out, key=lambda hit: -hit.similarity)
