"""The paraphrase protocol and its metrics, on hand-made and real pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from govml.errors import DataError
from govml.llm.cache.evaluation import (
    ParaphrasePair,
    ask_paraphrases,
    bad_hits,
    curve,
    load_paraphrase_pairs,
)
from govml.llm.embedding import Embedder, get_embedder

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "llm" / "paraphrase_pairs.json"

PAIRS = [
    ParaphrasePair("How do I bake sourdough bread?", "What is the way to bake sourdough bread?"),
    ParaphrasePair("What is the capital of Peru?", "Which city is the capital of Peru?"),
    ParaphrasePair("How tall is Mount Everest?", "What is the height of Mount Everest?"),
    ParaphrasePair("Who wrote Don Quixote?", "Who is the author of Don Quixote?"),
    ParaphrasePair("How do I renew my passport?", "What do I do to renew my passport?"),
    ParaphrasePair("What does a GPU do?", "What is the job of a GPU?"),
    ParaphrasePair("How many moons has Mars?", "How many moons does Mars have?"),
    ParaphrasePair("Why is the sky blue?", "What makes the sky look blue?"),
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder("minilm")


def test_distinct_topics_give_clean_hits_and_no_false_hits(embedder: Embedder) -> None:
    outcomes = ask_paraphrases(PAIRS, embedder, seed=0)
    assert outcomes.answerable.sum() == len(PAIRS) // 2
    (point,) = curve(outcomes, [0.75], second_check=True)
    assert point.answerable == 4 and point.unanswerable == 4
    assert point.hit_rate == 1.0 and point.precision == 1.0
    assert point.false_hit_rate == 0.0
    (strict,) = curve(outcomes, [0.999], second_check=True)
    assert strict.hits == 0 and strict.hit_rate == 0.0 and strict.precision == 1.0


def test_twins_count_as_correct(embedder: Embedder) -> None:
    twin = ParaphrasePair("What is the capital of Peru?", "Name the capital city of Peru.")
    pairs = [PAIRS[1], twin, PAIRS[0], PAIRS[2]]
    outcomes = ask_paraphrases(pairs, embedder, seed=3)
    # identical origins are twins: whichever copy is cached answers both questions
    assert outcomes.correct_ids[0] == outcomes.correct_ids[1]


@pytest.mark.skipif(not DATA.is_file(), reason="shared/data/llm is not beside the repo")
def test_real_pairs_obey_the_curve_properties(embedder: Embedder) -> None:
    pairs = load_paraphrase_pairs(DATA)[:120]
    outcomes = ask_paraphrases(pairs, embedder, seed=0)
    thresholds = [0.8, 0.85, 0.9, 0.95]
    plain = curve(outcomes, thresholds, second_check=False)
    checked = curve(outcomes, thresholds, second_check=True)
    for a, b in zip(plain, checked, strict=True):
        assert b.hits <= a.hits  # the check only ever takes hits away
        assert b.false_hit_rate <= a.false_hit_rate
    assert [p.hits for p in plain] == sorted((p.hits for p in plain), reverse=True)
    assert plain[0].hit_rate > 0.6  # paraphrases of cached origins are mostly found


def test_questions_subset_is_scored_alone(embedder: Embedder) -> None:
    outcomes = ask_paraphrases(PAIRS, embedder, seed=0)
    (part,) = curve(outcomes, [0.75], second_check=False, questions=[0, 1, 2])
    assert part.answerable + part.unanswerable == 3


def test_bad_files_are_data_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(DataError, match="cannot read"):
        load_paraphrase_pairs(missing)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"origin": "x"}))
    with pytest.raises(DataError, match="list"):
        load_paraphrase_pairs(bad)
    bad.write_text(json.dumps([{"origin": "x", "similar": 3}, {"origin": "y", "similar": "z"}]))
    with pytest.raises(DataError, match="item 0"):
        load_paraphrase_pairs(bad)
    bad.write_text(json.dumps([{"origin": "x", "similar": "y"}]))
    with pytest.raises(DataError, match="at least 2"):
        load_paraphrase_pairs(bad)


def test_bad_fraction_is_refused(embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="cached_fraction"):
        ask_paraphrases(PAIRS, embedder, cached_fraction=1.0)


class _Renamed:
    """The same MiniLM under another name: twins must then be measured by the reference."""

    def __init__(self, inner: Embedder, name: str) -> None:
        self.inner, self.name, self.dim = inner, name, inner.dim
        self.calls = 0

    def encode(self, texts: list[str]) -> object:
        self.calls += 1
        return self.inner.encode(texts)


def test_twins_come_from_the_reference_encoder(embedder: Embedder) -> None:
    reference = _Renamed(embedder, "reference")
    outcomes = ask_paraphrases(PAIRS, embedder, seed=0, twin_embedder=reference)
    assert reference.calls == 1
    assert outcomes.correct_ids == ask_paraphrases(PAIRS, embedder, seed=0).correct_ids


def test_token_check_applies_in_the_curve(embedder: Embedder) -> None:
    outcomes = ask_paraphrases(PAIRS, embedder, seed=0)
    assert outcomes.question_tokens is not None and outcomes.entry_tokens is not None
    (loose,) = curve(outcomes, [0.5], second_check=True, token_threshold=0.5)
    (strict,) = curve(outcomes, [0.5], second_check=True, token_threshold=0.99)
    assert loose.token_threshold == 0.5 and loose.hit_rate == 1.0
    assert strict.hits < loose.hits


def test_bad_hits_are_the_hits_the_answer_key_counts_against(embedder: Embedder) -> None:
    outcomes = ask_paraphrases(PAIRS, embedder, seed=0)
    (point,) = curve(outcomes, [0.0], second_check=False)  # every question takes a hit
    bad = bad_hits(outcomes, 0.0, second_check=False)
    assert point.hits == 8 and point.hit_rate == 1.0
    assert len(bad) == 4 and {hit.kind for hit in bad} == {"false"}
    origins = embedder.encode([p.origin for p in PAIRS])
    for hit in bad:
        assert not outcomes.answerable[hit.question] and outcomes.answerable[hit.served]
        assert hit.similarity == pytest.approx(float(origins[hit.question] @ origins[hit.served]), abs=1e-5)
    assert [hit.similarity for hit in bad] == sorted((hit.similarity for hit in bad), reverse=True)
    assert bad_hits(outcomes, 0.75) == [] and bad_hits(outcomes, 0.0, questions=[]) == []
