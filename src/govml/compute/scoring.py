"""Batch scoring of a registered model over Parquet or CSV files of any size.

``local`` streams the file through pyarrow one chunk at a time in this process;
``ray`` reads it with Ray Data, scores blocks in parallel actors that each receive
the model once, and writes a folder of part files. Both produce the same columns:
the kept input columns, ``prediction`` (what the model's ``predict`` returns: the
class index for classifiers, see docs/architecture.md), and for classifiers
``predicted_class`` (the class name) and ``probability_<class>`` per class.
"""

from __future__ import annotations

import itertools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.types import DataType
from pydantic import BaseModel
from sklearn.pipeline import Pipeline

from govml.compute.batch_io import (
    DEFAULT_CHUNK_ROWS,
    Engine,
    chunk_writer,
    csv_convert_options,
    file_format,
    read_chunks,
)
from govml.compute.ray_session import cluster_cpus, ray_connection
from govml.errors import DataError, GovmlError

_ARROW_TYPES: dict[DataType, pa.DataType] = {
    DataType.long: pa.int64(), DataType.integer: pa.int32(), DataType.double: pa.float64(),
    DataType.float: pa.float32(), DataType.string: pa.string(), DataType.boolean: pa.bool_(),
    DataType.binary: pa.binary(), DataType.datetime: pa.timestamp("ns"),
}


@dataclass(frozen=True)
class ScoringModel:
    """A registered sklearn-flavour model with what batch scoring needs to read its input."""

    estimator: Any
    uri: str
    columns: list[str]
    column_types: dict[str, pa.DataType]
    classes: list[str] | None  # None for a regressor


class ScoringResult(BaseModel):
    """What one ``govml score`` did."""

    model_uri: str
    engine: Engine
    input: str
    output: str
    rows: int
    chunks: int | None  # local engine: chunks written; Ray decides its own blocks
    seconds: float
    rows_per_second: float


def load_scoring_model(spec: str, *, tracking_uri: str) -> ScoringModel:
    """Resolve ``NAME@ALIAS``, ``NAME/VERSION`` or ``models:/...`` in the registry and load it."""
    from govml.serving.loading import load_model

    loaded = load_model(spec, tracking_uri=tracking_uri)
    estimator = loaded.sklearn_model
    if estimator is None:
        raise GovmlError(f"{loaded.ref.uri}: batch scoring needs an sklearn-flavour model (govml registers one)")
    if loaded.signature is not None and loaded.signature.inputs.has_input_names():
        specs = loaded.signature.inputs.inputs
        columns = [str(col.name) for col in specs]
        types = {str(col.name): _ARROW_TYPES[col.type] for col in specs if col.type in _ARROW_TYPES}
    elif hasattr(estimator, "feature_names_in_"):
        columns, types = [str(c) for c in estimator.feature_names_in_], {}
    else:
        raise GovmlError(f"{loaded.ref.uri}: the model has no input signature naming its columns")
    classes: list[str] | None = None
    if loaded.task == "classification":
        count = len(getattr(estimator, "classes_", [])) or len(loaded.class_names)
        classes = loaded.class_names or [str(i) for i in range(count)]
    return ScoringModel(estimator=estimator, uri=loaded.ref.uri, columns=columns, column_types=types, classes=classes)


def _preprocessed(estimator: Any, frame: pd.DataFrame) -> tuple[Any, Any]:
    """Preprocess once for both ``predict`` and ``predict_proba`` when the model is a Pipeline."""
    if isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
        return estimator[:-1].transform(frame), estimator[-1]
    return frame, estimator


def score_table(model: ScoringModel, table: pa.Table, keep: list[str]) -> pa.Table:
    """The output rows for one chunk of input rows."""
    X, estimator = _preprocessed(model.estimator, table.select(model.columns).to_pandas())
    columns: dict[str, pa.Array] = {name: table.column(name) for name in keep}
    if model.classes is None:
        columns["prediction"] = pa.array(np.asarray(estimator.predict(X), dtype=np.float64))
        return pa.table(columns)
    labels = np.asarray(estimator.predict(X), dtype=np.int64)
    proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    names = np.asarray(model.classes, dtype=object)
    columns["prediction"] = pa.array(labels)
    columns["predicted_class"] = pa.array(names[labels], type=pa.string())
    for index, name in enumerate(model.classes):
        columns[f"probability_{name}"] = pa.array(proba[:, index])
    return pa.table(columns)


def _check_keep(model: ScoringModel, keep: list[str], input_names: list[str] | None) -> None:
    clash = {"prediction", "predicted_class"} | {f"probability_{c}" for c in model.classes or []}
    if bad := sorted(set(keep) & clash):
        raise DataError(f"--keep {bad}: these names are the scoring output's own columns")
    if input_names is not None and (missing := sorted(set(keep) - set(input_names))):
        raise DataError(f"--keep {missing}: no such column in the input")


def _read_types(model: ScoringModel, keep: list[str]) -> tuple[list[str], dict[str, pa.DataType]]:
    needed = list(dict.fromkeys([*model.columns, *keep]))
    return needed, {name: model.column_types[name] for name in needed if name in model.column_types}


def score_file_local(
    model: ScoringModel, source: Path, target: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: list[str] | None = None,
) -> ScoringResult:
    """Stream ``source`` through the model chunk by chunk into the file ``target``."""
    keep = list(keep or [])
    _check_keep(model, keep, pq.ParquetFile(source).schema_arrow.names if _is_parquet(source) else None)
    needed, types = _read_types(model, keep)
    started = time.perf_counter()
    scored = (
        score_table(model, chunk, keep)
        for chunk in read_chunks(source, columns=needed, column_types=types, chunk_rows=chunk_rows)
    )
    first = next(scored, None)
    if first is None:
        raise DataError(f"{source}: the file has no rows to score")
    rows = chunks = 0
    with chunk_writer(target, first.schema) as writer:
        for table in itertools.chain([first], scored):
            writer.write(table)
            rows += table.num_rows
            chunks += 1
    return _result(model, "local", source, target, rows, chunks, started)


def _is_parquet(path: Path) -> bool:
    return path.is_file() and file_format(path) == "parquet"


def _result(
    model: ScoringModel, engine: Engine, source: Path, target: Path, rows: int, chunks: int | None, started: float
) -> ScoringResult:
    seconds = time.perf_counter() - started
    return ScoringResult(
        model_uri=model.uri, engine=engine, input=str(source), output=str(target), rows=rows, chunks=chunks,
        seconds=seconds, rows_per_second=rows / seconds if seconds > 0 else 0.0,
    )


class _RayBlockScorer:
    """A Ray Data actor: receives the model once, then scores every block it is given."""

    def __init__(self, model: ScoringModel, keep: list[str]) -> None:
        self._model = model
        self._keep = keep

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_table(self._model, batch, self._keep)


def score_file_ray(
    model: ScoringModel, source: Path, target: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: list[str] | None = None, address: str | None = None, num_cpus: int | None = None,
) -> ScoringResult:
    """Score ``source`` with Ray Data into the folder ``target`` of Parquet or CSV part files."""
    keep = list(keep or [])
    if not source.is_file():
        raise DataError(f"{source}: no such input file")
    kind, out_kind = file_format(source), file_format(target)
    _check_keep(model, keep, pq.ParquetFile(source).schema_arrow.names if kind == "parquet" else None)
    if target.exists():
        raise DataError(f"{target}: already exists; the Ray engine writes a new folder of part files")
    needed, types = _read_types(model, keep)
    started = time.perf_counter()
    with ray_connection(address=address, num_cpus=num_cpus) as ray:
        context = ray.data.DataContext.get_current()
        saved = (context.execution_options.preserve_order, context.enable_progress_bars)
        context.execution_options.preserve_order, context.enable_progress_bars = True, False
        try:
            if kind == "parquet":
                dataset = ray.data.read_parquet(str(source), columns=needed)
            else:
                dataset = ray.data.read_csv(str(source), convert_options=csv_convert_options(needed, types))
            scored = dataset.map_batches(
                _RayBlockScorer, fn_constructor_kwargs={"model": model, "keep": keep},
                batch_size=chunk_rows, batch_format="pyarrow", num_cpus=1,
                # One CPU stays free for the read and write tasks, or they wait on the actors forever.
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cluster_cpus(ray) - 1)),
            )
            rows = _write_parts_in_order(scored, target, out_kind, chunk_rows)
        except ray.exceptions.RayTaskError as exc:
            raise DataError(f"{source}: scoring failed on a Ray worker: {exc.cause!r}") from None
        finally:
            context.execution_options.preserve_order, context.enable_progress_bars = saved
    return _result(model, "ray", source, target, rows, None, started)


def _write_parts_in_order(scored: Any, target: Path, kind: str, chunk_rows: int) -> int:
    """Write the scores as ``part-00000.<kind>``, ... of ``chunk_rows`` rows each, in input
    order, from the driver; return the number of rows written.

    Ray's own ``write_parquet`` names a part after its write task, and the tasks did not
    always follow the input: one CI run in several read the parts back in another order.
    ``preserve_order`` does hold for the batches the driver iterates, so the driver
    writes; it receives only the scores and the ``--keep`` columns. A failed run leaves
    no folder behind."""
    target.mkdir(parents=True)
    rows = 0
    try:
        batches = scored.iter_batches(batch_size=chunk_rows, batch_format="pyarrow")
        for index, batch in enumerate(batches):
            with chunk_writer(target / f"part-{index:05d}.{kind}", batch.schema) as writer:
                writer.write(batch)
            rows += batch.num_rows
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return rows


def score_file(
    spec: str, source: Path, target: Path, *, tracking_uri: str, engine: Engine = "local",
    chunk_rows: int = DEFAULT_CHUNK_ROWS, keep: list[str] | None = None, address: str | None = None,
) -> ScoringResult:
    """``govml score``: load the registered model and score ``source`` into ``target``."""
    if chunk_rows < 1:
        raise DataError(f"--chunk-rows must be at least 1 (got {chunk_rows})")
    if not source.is_file():
        raise DataError(f"{source}: no such input file")
    file_format(source)
    file_format(target)
    model = load_scoring_model(spec, tracking_uri=tracking_uri)
    if engine == "local":
        return score_file_local(model, source, target, chunk_rows=chunk_rows, keep=keep)
    return score_file_ray(model, source, target, chunk_rows=chunk_rows, keep=keep, address=address)
