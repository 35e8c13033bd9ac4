"""The second check (numbers, negation and key terms must agree) and the token check."""

from __future__ import annotations

import numpy as np
import pytest

from govml.llm.cache.agreement import key_terms, negated, numbers, prompts_agree, token_agreement
from govml.llm.embedding import get_embedder


def test_numbers_are_compared_as_values() -> None:
    assert numbers("Give me 3 examples") == numbers("Give me three examples")
    assert numbers("costs 1,000 dollars") == {"1000"}
    assert numbers("a 10% rise") == {"10%"}
    assert numbers("call `f(2)` once") == frozenset()  # code spans are not counts
    assert numbers("in one go") == frozenset()


def test_negation_cues() -> None:
    assert negated("Why doesn\u2019t my dataset load?")
    assert negated("It cannot be streamed")
    assert not negated("Why does my dataset load?")


def test_key_terms_find_identifiers_and_acronyms() -> None:
    terms = key_terms(
        "Use `Dataset.map()` with load_from_cache_file on NLP data in IterableDataset"
    )
    assert {"load_from_cache_file", "nlp", "iterabledataset", "dataset", "map"} <= terms
    assert key_terms("How do I bake bread?") == frozenset()


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("Give me 3 reasons to learn Python", "Give me 5 reasons to learn Python", "numbers"),
        ("Is the dataset streamed?", "Is the dataset not streamed?", "negated"),
        ("How do I use `rename_column()`?", "How do I use `remove_columns()`?", "key terms"),
        ("What is the TTL in HTTP caching?", "What is the TTL in DNS caching?", "key terms"),
    ],
)
def test_disagreements_are_named(a: str, b: str, why: str) -> None:
    verdict = prompts_agree(a, b)
    assert not verdict.agree
    assert why in verdict.reason


def test_paraphrases_agree() -> None:
    assert prompts_agree(
        "How can I rename a column with `rename_column()`?",
        "What is the way to give a column a new name using rename_column()?",
    ).agree
    assert prompts_agree("I don't want two copies", "I do not want 2 copies").agree


def test_token_agreement_is_the_lower_of_recall_and_precision() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(6, 8)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    assert token_agreement(tokens, tokens) == pytest.approx(1.0)
    # a cached prompt that says only half: every cached token is matched, half the new ones not
    half = token_agreement(tokens, tokens[:3])
    assert half < 1.0
    assert token_agreement(tokens[:3], tokens) == pytest.approx(half)


def test_token_agreement_separates_a_prompt_that_says_less() -> None:
    embedder = get_embedder("minilm")
    full, paraphrase, shorter = embedder.encode_tokens(
        [
            "The documentation covers tutorials, how-to guides and reference material for the library.",
            "Tutorials, how-to guides and reference material for the library are in the documentation.",
            "The documentation explains the library.",
        ]
    )
    assert token_agreement(paraphrase, full) > token_agreement(paraphrase, shorter)
