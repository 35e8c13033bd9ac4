"""``govml score``: a real model in a real MLflow registry, scored chunk by chunk with both engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from benchmarks.scale import ADULT, write_adult_like
from govml.compute.cli import register
from govml.compute.scoring import score_file
from govml.errors import DataError, GovmlError
from govml.features.preprocess import build_preprocessor, split_columns
from govml.registry import log_sklearn_model, register_model
from govml.training.tracking import TrackedRun, ensure_experiment, make_client

CLASSES = ["<=50K", ">50K"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A SQLite MLflow store holding ``adult@candidate``: preprocessing + LightGBM, as govml registers it."""
    from sklearn.pipeline import Pipeline

    tmp = tmp_path_factory.mktemp("scoring")
    mp = pytest.MonkeyPatch()
    mp.setenv("GOVML_HOME", str(tmp / "home"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp / 'home' / 'mlflow.db'}"
    (tmp / "home").mkdir()
    frame = pd.read_csv(ADULT).sample(4000, random_state=0)
    X, y = frame.drop(columns=["income", "fnlwgt"]), (frame["income"] == ">50K").astype(int).to_numpy()
    model = Pipeline([
        ("preprocess", build_preprocessor(split_columns(X), scaling="standard", max_categories=50)),
        ("model", lgb.LGBMClassifier(n_estimators=30, random_state=0, n_jobs=1, verbosity=-1)),
    ]).fit(X, y)
    client = make_client(uri)
    run = TrackedRun(client, ensure_experiment(client, "adult", tracking_uri=uri), run_name="adult", tags={})
    run.log_json({"data": {"task": "classification", "classes": CLASSES}}, "govml/record.json")
    source = log_sklearn_model(
        client, run.run_id, model, input_example=X.head(5), predict_fn_output=model.predict(X.head(5))
    )
    register_model(client, "adult", source=source, run_id=run.run_id, tags={}, aliases=["candidate"])
    run.finish()
    yield uri, model, tmp
    mp.undo()


@pytest.fixture(scope="module")
def rows(registry: Any) -> Path:
    return write_adult_like(registry[2] / "rows.parquet", 12_345, seed=1, chunk_rows=5000)


def _expected(model: Any, source: Path) -> pd.DataFrame:
    frame = pq.read_table(source).to_pandas()
    features = frame.drop(columns=["fnlwgt"])
    proba = model.predict_proba(features)
    return pd.DataFrame({
        "age": frame["age"], "prediction": model.predict(features),
        "predicted_class": np.asarray(CLASSES)[model.predict(features)],
        "probability_<=50K": proba[:, 0], "probability_>50K": proba[:, 1],
    })


def test_local_engine_scores_in_chunks_like_the_model_on_the_whole_frame(
    registry: Any, rows: Path, tmp_path: Path
) -> None:
    uri, model, _ = registry
    target = tmp_path / "scored.parquet"
    result = score_file("adult@candidate", rows, target, tracking_uri=uri, chunk_rows=1000, keep=["age"])
    assert result.rows == 12_345 and result.chunks == 13 and result.model_uri == "models:/adult/1"
    assert pq.ParquetFile(target).metadata.num_row_groups == 13  # written chunk by chunk
    got = pq.read_table(target).to_pandas()
    pd.testing.assert_frame_equal(got, _expected(model, rows), check_dtype=False)


def test_csv_input_and_output_give_the_same_scores(registry: Any, rows: Path, tmp_path: Path) -> None:
    uri, model, _ = registry
    source = write_adult_like(tmp_path / "rows.csv", 3000, seed=2, chunk_rows=1000)
    target = tmp_path / "scored.csv"
    score_file("models:/adult@candidate", source, target, tracking_uri=uri, chunk_rows=700)
    got = pd.read_csv(target)
    expected = model.predict_proba(pd.read_csv(source).drop(columns=["fnlwgt"]))[:, 1]
    assert list(got.columns) == ["prediction", "predicted_class", "probability_<=50K", "probability_>50K"]
    np.testing.assert_allclose(got["probability_>50K"], expected, rtol=1e-12)


def test_ray_engine_writes_the_same_rows_in_the_same_order(
    registry: Any, rows: Path, tmp_path: Path, ray_cluster: Any
) -> None:
    uri, model, _ = registry
    target = tmp_path / "scored-ray.parquet"
    result = score_file("adult/1", rows, target, tracking_uri=uri, engine="ray", chunk_rows=1000, keep=["age"])
    assert result.rows == 12_345 and result.engine == "ray" and target.is_dir()
    parts = sorted(p.name for p in target.iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(13)]  # one per 1,000 rows
    # read back part by part in name order: the promise is input order
    got = pd.concat([pq.read_table(target / name).to_pandas() for name in parts], ignore_index=True)
    pd.testing.assert_frame_equal(got, _expected(model, rows), check_dtype=False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("adult@nope", "nope"), ("missing@candidate", "missing"), ("/etc/passwd", "refused")],
)
def test_unknown_models_are_clear_errors(registry: Any, rows: Path, tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(GovmlError, match=message):
        score_file(spec, rows, tmp_path / "o.parquet", tracking_uri=registry[0])


def test_bad_inputs_are_data_errors_and_leave_no_output(registry: Any, rows: Path, tmp_path: Path) -> None:
    uri = registry[0]
    no_age = tmp_path / "no-age.parquet"
    pq.write_table(pq.read_table(rows).drop_columns(["age"]), no_age)
    cases = [
        (no_age, tmp_path / "o1.parquet", {}, "age"),
        (tmp_path / "absent.parquet", tmp_path / "o2.parquet", {}, "no such input file"),
        (rows, tmp_path / "o3.json", {}, "unknown file type"),
        (rows, tmp_path / "o4.parquet", {"keep": ["prediction"]}, "output's own columns"),
        (rows, tmp_path / "o5.parquet", {"keep": ["id"]}, "no such column"),
        (rows, tmp_path / "o6.parquet", {"chunk_rows": 0}, "at least 1"),
    ]
    for source, target, extra, message in cases:
        with pytest.raises(DataError, match=message):
            score_file("adult@candidate", source, target, tracking_uri=uri, **extra)
        assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_score_command(registry: Any, rows: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    target = tmp_path / "cli.parquet"
    result = CliRunner().invoke(
        app, ["score", "adult@candidate", str(rows), str(target), "--chunk-rows", "5000", "--tracking-uri", registry[0]]
    )
    assert result.exit_code == 0, result.output
    assert "scored 12,345 rows with models:/adult/1 (local)" in result.output
    assert pq.ParquetFile(target).metadata.num_rows == 12_345
    bad = CliRunner().invoke(app, ["score", "adult@candidate", str(rows), str(target), "--engine", "spark"])
    assert bad.exit_code == 2 and "spark" in bad.output
