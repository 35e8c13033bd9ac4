"""Train the guard's classifier heads and measure every layer on a held-out split.

The split is by source, not by row: whole jailbreak families, whole clusters of
near-paraphrased harmful requests, role-play acts, paraphrase pairs (with their
twins) and project topics are held out, so no family sits on both sides. The shipped
head is then refitted on all the data with thresholds chosen the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from govml.llm.safety.classifier import GuardHead, fit_head, save_head
from govml.llm.safety.dataset import (
    CATEGORIES,
    SAFE,
    TOXIC,
    Example,
    load_examples,
    merge_near_duplicates,
    source_split,
)
from govml.llm.safety.lexical import DEFAULT_TOXICITY_HEAD, LEXICAL_C, LexicalHead, fit_lexical, save_lexical
from govml.llm.safety.metrics import rate

# cosine at or above which two examples of one source count as one group for the split:
# harmful requests are heavily paraphrased (bomb-making, hacking), hence the lower cut
NEAR_DUPLICATE = {
    "harmful_requests": 0.75,
    "toxicity_labeled.csv": 0.9,
    "paraphrase_pairs": 0.9,
    "benign_roleplay": 0.9,
}
ATTACKS = ("jailbreak", "harmful")
# Share of each benign source's out-of-fold examples a head may flag, per category. The
# budget holds for every benign source on its own (role-play, security questions, tweets,
# ...), not for their mix, so thousands of easy negatives cannot hide a bad source.
FPR_TARGETS = {"jailbreak": 0.04, "harmful": 0.04, "toxic": 0.02}
#: the encoder whose vectors group near-duplicates for the split: the packaged graph,
#: within 0.999 cosine of fp32 MiniLM and independent of the encoder being trained
SPLIT_EMBEDDER = "minilm-packaged-int8"
# Inverse regularisation of the logistic heads (0.5 and 1 measured alike; 0.5 is the
# stabler of the two across split seeds).
HEAD_C = 0.5


class LayerFigures(BaseModel):
    """Held-out detection rates of one layer (or of the combined guard)."""

    attack_recall: float | None
    recall: dict[str, float | None]
    benign_fpr: float | None
    fpr_by_source: dict[str, float | None]


class SplitDescription(BaseModel):
    """How the held-out split was made and how big each side is per source."""

    method: str
    train_rows: dict[str, int]
    test_rows: dict[str, int]
    held_out_jailbreak_families: list[str]


class GuardTrainingReport(BaseModel):
    """What ``train_guard`` wrote and what it measured."""

    head_path: str
    npz_sha256: str
    seed: int
    embedder: str
    rows: dict[str, int]
    thresholds: dict[str, float]
    split: SplitDescription
    held_out: dict[str, LayerFigures]
    toxicity_path: str
    toxicity_npz_sha256: str
    toxicity_threshold: float
    seconds: float


def _encode(texts: Sequence[str], embedder_name: str) -> np.ndarray:
    from govml.llm.embedding import get_embedder

    vectors = get_embedder(embedder_name).encode(list(texts))
    # rounding makes the fitted head insensitive to last-bit differences in the encoder's
    # arithmetic, so the same inputs give the same bytes
    return np.round(vectors.astype(np.float64), 5)


def source_weights(examples: Sequence[Example]) -> np.ndarray:
    """Row weights giving every benign source the same total weight (their mean stays
    1), so a few hundred role-play and security prompts count as much as thousands of
    tweets; unsafe rows weigh 1."""
    weight = np.ones(len(examples))
    safe_sources = Counter(ex.source for ex in examples if not ex.unsafe)
    n_safe = sum(safe_sources.values())
    for i, ex in enumerate(examples):
        if not ex.unsafe:
            weight[i] = n_safe / len(safe_sources) / safe_sources[ex.source]
    return weight


def choose_thresholds(
    vectors: np.ndarray,
    examples: Sequence[Example],
    groups: Sequence[str],
    *,
    fpr_targets: dict[str, float],
    c: float = HEAD_C,
    folds: int = 5,
) -> list[float]:
    """Per category, the lowest probability that out-of-fold examples of every benign
    source exceed at most ``fpr_targets[category]`` of the time (grouped folds, so
    near-duplicates do not leak)."""
    from sklearn.model_selection import GroupKFold

    y = np.asarray([ex.label for ex in examples])
    weight = source_weights(examples)
    oof = np.zeros((len(y), len(CATEGORIES)))
    for fit_rows, score_rows in GroupKFold(n_splits=folds).split(vectors, y, groups):
        head = fit_head(
            vectors[fit_rows],
            y[fit_rows],
            CATEGORIES,
            thresholds=[0.5] * len(CATEGORIES),
            c=c,
            sample_weight=weight[fit_rows],
        )
        oof[score_rows] = head.risks(vectors[score_rows])
    return [fpr_cut(oof[:, k], examples, fpr_targets[category]) for k, category in enumerate(CATEGORIES)]


def fpr_cut(risks: np.ndarray, examples: Sequence[Example], target: float) -> float:
    """The lowest risk that the benign examples of every source exceed at most
    ``target`` of the time (each source on its own), kept within [0.2, 0.98]."""
    sources = np.asarray([ex.source for ex in examples])
    safe = np.asarray([not ex.unsafe for ex in examples])
    cut = max(np.quantile(risks[safe & (sources == s)], 1 - target) for s in sorted(set(sources[safe])))
    return float(np.clip(cut, 0.2, 0.98))


def train_lexical(
    examples: Sequence[Example],
    groups: Sequence[str],
    *,
    fpr_target: float,
    folds: int = 5,
    metadata: dict[str, object] | None = None,
) -> LexicalHead:
    """Fit the n-gram toxicity model on the toxic and safe ``examples`` (others are left
    out), its threshold chosen like the heads': out-of-fold, grouped, per benign source."""
    from sklearn.model_selection import GroupKFold

    rows = [i for i, ex in enumerate(examples) if ex.label in (TOXIC, SAFE)]
    chosen = [examples[i] for i in rows]
    texts = [ex.text for ex in chosen]
    toxic = np.asarray([ex.label == TOXIC for ex in chosen])
    weight = source_weights(chosen)
    oof = np.zeros(len(chosen))
    for fit_rows, score_rows in GroupKFold(n_splits=folds).split(texts, toxic, [groups[i] for i in rows]):
        fold = fit_lexical([texts[i] for i in fit_rows], toxic[fit_rows], threshold=0.5, sample_weight=weight[fit_rows])
        oof[score_rows] = fold.risks([texts[i] for i in score_rows])
    threshold = fpr_cut(oof, chosen, fpr_target)
    return fit_lexical(texts, toxic, threshold=threshold, sample_weight=weight, metadata=metadata)


def _figures(examples: Sequence[Example], flagged: Sequence[bool]) -> LayerFigures:
    by_label: dict[str, list[bool]] = {}
    by_source: dict[str, list[bool]] = {}
    for ex, flag in zip(examples, flagged, strict=True):
        by_label.setdefault(ex.label, []).append(flag)
        if not ex.unsafe:
            by_source.setdefault(ex.source, []).append(flag)
    attacks = [f for ex, f in zip(examples, flagged, strict=True) if ex.label in ATTACKS]
    benign = [f for ex, f in zip(examples, flagged, strict=True) if not ex.unsafe]
    return LayerFigures(
        attack_recall=rate(attacks),
        recall={c: rate(by_label.get(c, [])) for c in CATEGORIES},
        benign_fpr=rate(benign),
        fpr_by_source={s: rate(v) for s, v in sorted(by_source.items())},
    )


def measure_layers(
    head: GuardHead,
    examples: Sequence[Example],
    vectors: np.ndarray | None = None,
    *,
    toxicity_model: LexicalHead | None = None,
) -> dict[str, LayerFigures]:
    """Figures of each layer alone and combined, from one run of the real
    :class:`PromptGuard` (the combined score is the worst layer's, so a layer "alone"
    flags exactly when its own risk crosses the threshold). ``vectors``: the examples'
    embeddings if already computed. With ``toxicity_model`` the guard scores ``toxic``
    with it (the default way), and ``classifier_toxic_on_vectors`` gives the classifier
    layer with the head's own ``toxic`` column instead, for comparison."""
    from govml.llm.safety.guard import PromptGuard

    texts = [ex.text for ex in examples]
    given = None if vectors is None else list(vectors)
    toxicity = "embedding" if toxicity_model is None else "lexical"
    guard = PromptGuard(head=head, detect_pii=False, toxicity=toxicity, toxicity_model=toxicity_model)
    results = guard.check_batch(texts, embeddings=given)
    guard.close()
    cut = 1.0 - guard.threshold
    out = {layer: _figures(examples, [r.layers[layer] > cut for r in results]) for layer in ("rules", "classifier")}
    out["combined"] = _figures(examples, [r.flagged for r in results])
    out["normalisation_changed"] = _figures(examples, [bool(r.normalisation) for r in results])
    if toxicity_model is not None:
        on_vectors = PromptGuard(head=head, detect_pii=False, use_rules=False, toxicity="embedding")
        flagged = [r.flagged for r in on_vectors.check_batch(texts, embeddings=given)]
        on_vectors.close()
        out["classifier_toxic_on_vectors"] = _figures(examples, flagged)
    return out


def train_guard(
    data_dir: Path,
    out: Path,
    *,
    seed: int = 0,
    test_fraction: float = 0.3,
    fpr_targets: dict[str, float] | None = None,
    toxic_sample: int = 2500,
    embedder: str = "minilm",
    split_embedder: str = SPLIT_EMBEDDER,
    toxicity_out: Path | None = None,
) -> GuardTrainingReport:
    """Train the heads on ``data_dir`` (the layout of ``shared/data/llm``), measure each
    layer on a source-held-out split, refit on everything and write ``out`` (.npz) and
    its .json side-car, and the n-gram toxicity model to ``toxicity_out`` (default:
    ``toxicity_head.npz`` beside ``out``). Deterministic: same data and seed, same bytes.

    ``split_embedder`` decides which rows are near-duplicates (and so held out
    together); it is fixed apart from ``embedder`` so that two encoders are measured on
    the same held-out rows."""
    started = time.perf_counter()
    targets = dict(FPR_TARGETS if fpr_targets is None else fpr_targets)
    examples = load_examples(Path(data_dir), toxic_sample=toxic_sample, seed=seed)
    labels = [ex.label for ex in examples]
    vectors = _encode([ex.text for ex in examples], embedder)
    reference = vectors if split_embedder == embedder else _encode([ex.text for ex in examples], split_embedder)
    groups = merge_near_duplicates(examples, reference, threshold=NEAR_DUPLICATE)
    held = np.asarray(source_split(examples, groups, test_fraction=test_fraction, seed=seed))
    train_idx, test_idx = np.flatnonzero(~held), np.flatnonzero(held)
    train_examples = [examples[i] for i in train_idx]
    split_thresholds = choose_thresholds(
        vectors[train_idx], train_examples, [groups[i] for i in train_idx], fpr_targets=targets
    )  # the head keeps its toxic column: `toxicity: embedding` reads it
    split_head = fit_head(
        vectors[train_idx],
        [ex.label for ex in train_examples],
        CATEGORIES,
        thresholds=split_thresholds,
        c=HEAD_C,
        sample_weight=source_weights(train_examples),
        embedder=embedder,
    )
    train_groups = [groups[i] for i in train_idx]
    split_lexical = train_lexical(train_examples, train_groups, fpr_target=targets[TOXIC])
    test_examples = [examples[i] for i in test_idx]
    figures = measure_layers(split_head, test_examples, vectors[test_idx], toxicity_model=split_lexical)

    thresholds = choose_thresholds(vectors, examples, groups, fpr_targets=targets)
    split = SplitDescription(
        method=(
            f"per source, whole groups held out until {test_fraction:.0%} of its rows: "
            "jailbreak families (template name without version, pliny/<vendor>, DAN "
            "variants, nesting), connected components of near-duplicates by cosine "
            f"{NEAR_DUPLICATE} ({split_embedder} vectors), role-play acts, paraphrase pairs, "
            f"project topics; seed {seed}"
        ),
        train_rows=dict(Counter(examples[i].source for i in train_idx)),
        test_rows=dict(Counter(examples[i].source for i in test_idx)),
        held_out_jailbreak_families=sorted(
            {ex.group.removeprefix("jb:") for ex in test_examples if ex.label == "jailbreak"}
        ),
    )
    metadata = {
        "seed": seed,
        "rows": dict(sorted(Counter(labels).items())),
        "fpr_targets": targets,
        "head_c": HEAD_C,
        "weighting": "each benign source the same total weight; classes balanced",
        "toxic_sample": toxic_sample,
        "held_out": {k: v.model_dump() for k, v in figures.items()},
        "split": split.model_dump(),
    }
    head = fit_head(
        vectors,
        labels,
        CATEGORIES,
        thresholds=thresholds,
        c=HEAD_C,
        sample_weight=source_weights(examples),
        embedder=embedder,
        metadata=metadata,
    )
    digest = save_head(head, Path(out))
    toxicity_out = Path(out).with_name(DEFAULT_TOXICITY_HEAD.name) if toxicity_out is None else Path(toxicity_out)
    # the model alone on the held-out rows (raw text, whole): its toxic recall and its
    # false alarms per benign source
    held_risks = split_lexical.risks([ex.text for ex in test_examples])
    alone = _figures(test_examples, list(held_risks >= split_lexical.threshold))
    lexical_meta = {
        "seed": seed,
        "c": LEXICAL_C,
        "fpr_target": targets[TOXIC],
        "weighting": metadata["weighting"],
        "held_out_threshold": split_lexical.threshold,
        "held_out": {
            "toxic_recall": alone.recall[TOXIC],
            "benign_fpr": alone.benign_fpr,
            "fpr_by_source": alone.fpr_by_source,
        },
        "split": metadata["split"],
    }
    lexical = train_lexical(examples, groups, fpr_target=targets[TOXIC], metadata=lexical_meta)
    lexical_digest = save_lexical(lexical, toxicity_out)
    return GuardTrainingReport(
        head_path=str(out),
        npz_sha256=digest,
        seed=seed,
        embedder=embedder,
        rows=metadata["rows"],  # type: ignore[arg-type]
        thresholds=dict(zip(CATEGORIES, thresholds, strict=True)),
        split=split,
        held_out=figures,
        toxicity_path=str(toxicity_out),
        toxicity_npz_sha256=lexical_digest,
        toxicity_threshold=lexical.threshold,
        seconds=time.perf_counter() - started,
    )
