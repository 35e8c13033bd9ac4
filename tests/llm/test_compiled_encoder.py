"""The MiniLM compiled here: where it is kept, what the graph holds, that it is rebuilt the
same way, and the errors a broken install gets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from govml.errors import GovmlError
from govml.llm.compiled_encoder import build_compiled_minilm, model_cache_dir
from govml.llm.embedding import _MINILM, embedder_identity, get_embedder, packaged_model_dir


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOVML_MODEL_CACHE", str(tmp_path / "models"))
    assert model_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("GOVML_MODEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "govml" / "models"


def test_a_model_folder_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GovmlError, match="model.safetensors"):
        build_compiled_minilm(tmp_path, cache_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unwritable_cache_folder_says_what_to_set(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(GovmlError, match="GOVML_MODEL_CACHE"):
        build_compiled_minilm(packaged_model_dir(_MINILM), cache_dir=blocker / "models")


def test_default_embedder_runs_the_fused_int8_graph() -> None:
    embedder = get_embedder("minilm")
    model_file = embedder.model_file  # type: ignore[attr-defined]
    ops = Counter(node.op_type for node in onnx.load(str(model_file)).graph.node)
    # fused attention on int8 weights, every other matrix product in int8: what makes it
    # fast; only the embedding table stays float
    assert ops["QAttention"] == 6
    assert ops["MatMulInteger"] == 18
    assert ops["MatMul"] == 0
    assert ops["EmbedLayerNormalization"] == 1
    assert embedder_identity(embedder) == f"minilm:{model_file.name}"


def test_a_text_gets_the_same_vector_alone_and_in_a_batch() -> None:
    # dynamic quantisation scales a whole input tensor: batch-mates would change a vector
    embedder = get_embedder("minilm")
    texts = ["short", "a much longer sentence about tax returns " * 10, "medium length text"]
    alone = np.vstack([embedder.encode([t]) for t in texts])
    np.testing.assert_array_equal(embedder.encode(texts), alone)


@pytest.mark.slow
def test_the_build_is_reproducible(tmp_path: Path) -> None:
    built = build_compiled_minilm(packaged_model_dir(_MINILM), cache_dir=tmp_path)
    shipped = get_embedder("minilm").model_file  # type: ignore[attr-defined]
    assert built.name == shipped.name
    assert built.read_bytes() == shipped.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no build folder left behind
    inode = built.stat().st_ino
    assert build_compiled_minilm(packaged_model_dir(_MINILM), cache_dir=tmp_path) == built
    assert built.stat().st_ino == inode  # found (and marked used), not rebuilt and replaced


def test_builds_nobody_opened_for_a_month_are_removed(tmp_path: Path) -> None:
    import os
    import shutil
    import time

    current = Path(get_embedder("minilm").model_file)  # type: ignore[attr-defined]
    shutil.copy(current, tmp_path / current.name)
    day = 86_400
    stale = tmp_path / "all-minilm-l6-v2-int8-0000000000000000.onnx"
    recent = tmp_path / "all-minilm-l6-v2-int8-1111111111111111.onnx"
    other = tmp_path / "someone-elses-model.onnx"
    for path, age in ((stale, 40 * day), (recent, 2 * day), (other, 400 * day), (tmp_path / current.name, 60 * day)):
        path.touch(exist_ok=True)
        os.utime(path, (time.time() - age, time.time() - age))
    assert build_compiled_minilm(packaged_model_dir(_MINILM), cache_dir=tmp_path) == tmp_path / current.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([current.name, recent.name, other.name])
    assert time.time() - (tmp_path / current.name).stat().st_mtime < day  # marked as used
