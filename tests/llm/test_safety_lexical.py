"""The n-gram toxicity model: its arithmetic against scikit-learn's, its files, the
shipped model on real tweets, and how the guard and the output filter use it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from govml.errors import ConfigError, DataError
from govml.llm.safety import OutputFilter, PromptGuard, StreamingOutputFilter
from govml.llm.safety.lexical import (
    DEFAULT_TOXICITY_HEAD,
    fit_lexical,
    load_lexical,
    save_lexical,
    term_counts,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "llm"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data/llm is not beside the repo")

TOXIC = "shut up you stupid worthless bitch, nobody likes your ugly ass"
PLAIN = [
    "Your balance is shown in the app under Accounts.",
    "To kill a hung Python process, find its id with ps and send it SIGTERM.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
]


def _tweets(n: int) -> tuple[list[str], list[bool]]:
    with (DATA / "toxicity_labeled.csv").open(encoding="utf-8", newline="") as handle:
        rows = [row for _, row in zip(range(n), csv.DictReader(handle), strict=False)]
    return [r["tweet"] for r in rows], [r["class"] != "2" for r in rows]


class _NoEncoder:
    """An embedder that must not be called: the n-gram model needs no encoder."""

    name, dim = "minilm", 384

    def encode(self, texts: list[str]) -> np.ndarray:
        raise AssertionError(f"encoded {texts!r}")


@needs_data
def test_risks_equal_scikit_learns_pipeline(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    texts, toxic = _tweets(600)
    head = fit_lexical(texts, toxic, threshold=0.6)
    counts = term_counts(texts)
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
    y = np.asarray(toxic)
    weight = np.ones(len(y))
    weight[y] *= (~y).sum() / y.sum()
    model = LogisticRegression(C=10.0, max_iter=5000, tol=1e-6).fit(tfidf.transform(counts), y, sample_weight=weight)
    expected = model.predict_proba(tfidf.transform(term_counts(PLAIN + [TOXIC])))[:, 1]
    np.testing.assert_allclose(head.risks(PLAIN + [TOXIC]), expected, atol=1e-9)
    # stored as float32: the same to about 1e-6
    digest = save_lexical(head, tmp_path / "tox.npz")
    loaded = load_lexical(tmp_path / "tox.npz")
    np.testing.assert_allclose(loaded.risks(PLAIN + [TOXIC]), expected, atol=1e-5)
    assert loaded.threshold == 0.6
    # the same model gives the same bytes
    assert save_lexical(fit_lexical(texts, toxic, threshold=0.6), tmp_path / "again.npz") == digest
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "tox.npz").read_bytes()


def test_model_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train-guard"):
        load_lexical(tmp_path / "missing.npz")
    copy = tmp_path / "tox.npz"
    shutil.copy(DEFAULT_TOXICITY_HEAD, copy)
    side = json.loads(DEFAULT_TOXICITY_HEAD.with_suffix(".json").read_text())
    side["features"]["char_ngrams"] = [1, 3]
    copy.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(DataError, match="built with features"):
        load_lexical(copy)
    side["features"] = json.loads(DEFAULT_TOXICITY_HEAD.with_suffix(".json").read_text())["features"]
    copy.with_suffix(".json").write_text(json.dumps(side))
    assert load_lexical(copy).threshold == side["threshold"]
    copy.write_bytes(copy.read_bytes()[:-8] + b"xxxxxxxx")
    with pytest.raises(DataError, match="digest"):
        load_lexical(copy)


def test_fitting_needs_both_classes() -> None:
    with pytest.raises(DataError, match="at least 2 toxic"):
        fit_lexical(["a", "b", "c"], [True, False, False], threshold=0.5)
    with pytest.raises(ValueError, match="one value per text"):
        fit_lexical(["a b", "c d", "e f", "g h"], [True, True, False, False], threshold=0.5, sample_weight=[1.0])
    with pytest.raises(TypeError):
        term_counts("one string")  # type: ignore[arg-type]


@needs_data
def test_the_shipped_model_on_real_tweets() -> None:
    head = load_lexical()
    held = (head.metadata or {})["held_out"]
    # measured at training on tweets and prompts it never saw (split by source)
    assert held["toxic_recall"] >= 0.8
    assert held["fpr_by_source"]["toxicity_labeled.csv:neutral"] <= 0.03
    texts, toxic = _tweets(400)
    flagged = head.risks(texts) >= head.threshold
    y = np.asarray(toxic)
    assert flagged[y].mean() > 0.8 and flagged[~y].mean() < 0.1  # training rows: a sanity bound
    assert (head.risks(PLAIN) < head.threshold).all()
    assert head.risks([TOXIC])[0] >= head.threshold


def test_output_filter_scores_toxicity_without_the_encoder() -> None:
    output_filter = OutputFilter(embedder=_NoEncoder(), detect_pii=False)
    toxic = output_filter.check(TOXIC)
    assert toxic.flagged and toxic.categories == ["toxic"]
    assert toxic.category_scores["toxic"] == pytest.approx(load_lexical().risks([TOXIC])[0], abs=1e-9)
    assert not any(output_filter.check(text).flagged for text in PLAIN)
    # a streamed answer is checked window by window, still without the encoder
    stream = StreamingOutputFilter(output_filter, window=200, check_every=40)
    answer = " ".join(PLAIN) + " Anyway, " + TOXIC
    results = [stream.feed(answer[i : i + 9]) for i in range(0, len(answer), 9)]
    checked = [r for r in results if r is not None] + [stream.finish()]
    assert not checked[0].flagged and checked[-1].flagged
    # the MiniLM head on request
    with pytest.raises(AssertionError, match="encoded"):
        OutputFilter(embedder=_NoEncoder(), detect_pii=False, toxicity="embedding").check(TOXIC)
    output_filter.close()


def test_a_toxic_sentence_inside_a_long_answer_is_found() -> None:
    output_filter = OutputFilter(embedder=_NoEncoder(), detect_pii=False)
    long_answer = " ".join(PLAIN * 20) + " " + TOXIC + " " + " ".join(PLAIN * 20)
    assert len(long_answer.split()) > 300
    result = output_filter.check(long_answer)
    assert result.flagged and "toxic" in result.categories
    output_filter.close()


def test_the_guard_scores_toxic_with_the_ngram_model() -> None:
    guard = PromptGuard(detect_pii=False)
    by_vectors = PromptGuard(detect_pii=False, toxicity="embedding")
    result = guard.check(TOXIC)
    assert result.flagged and "toxic" in result.categories
    assert result.category_scores["toxic"] == pytest.approx(load_lexical().risks([TOXIC])[0], abs=1e-9)
    # the other categories still come from the MiniLM heads, the same either way
    other = by_vectors.check(TOXIC)
    for category in ("jailbreak", "harmful"):
        assert result.category_scores[category] == pytest.approx(other.category_scores[category])
    assert other.category_scores["toxic"] != pytest.approx(result.category_scores["toxic"])
    with pytest.raises(ValueError, match="toxicity must be one of"):
        PromptGuard(detect_pii=False, toxicity="regex")
    guard.close()
    by_vectors.close()


def test_the_gateway_yaml_chooses_the_toxicity_model(tmp_path: Path) -> None:
    from govml.llm.config import parse_gateway_config
    from govml.llm.gateway import Gateway

    raw = {
        "models": [{"name": "m", "backends": ["b"]}],
        "backends": {"b": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "cache": {"enabled": False},
        "safety": {"toxicity": "embedding", "pii_entities": []},
    }
    config = parse_gateway_config(raw, source=tmp_path / "gateway.yaml")
    gateway = Gateway.from_config(config, home=tmp_path, environ={"GOVML_API_KEYS": "k"})
    try:
        guard, output_filter = gateway.owned_safety
        assert output_filter.check(TOXIC).category_scores["toxic"] != pytest.approx(
            load_lexical().risks([TOXIC])[0]
        )
    finally:
        gateway.close()
    raw["safety"] = {"toxicity": "words"}
    with pytest.raises(ConfigError, match="toxicity"):
        parse_gateway_config(raw, source=tmp_path / "gateway.yaml")
