"""Live monitoring: Prometheus metrics, the prediction log, rolling drift and carbon per prediction.

Request handlers only put a record on a bounded queue; one writer thread batches the
records into the log (SQLite, or PostgreSQL shared by several replicas), keeps a
rolling window of recent inputs and recomputes drift against the training reference
every ``drift_every`` rows. Nothing here blocks or fails a request: when the queue is
full a record is dropped and counted.

Carbon per prediction, SCI style (operational only, no embodied share): the CPU time
the worker thread spent on a request times ``cpu_watts`` (the power of one busy
core) gives its energy; times the grid intensity of ``country_iso_code`` (CodeCarbon's
bundled table) gives its emissions; divided by the rows it scored gives the
emissions per prediction.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from govml.errors import DataError
from govml.features.drift import DriftReference, DriftReport, compute_drift
from govml.serving.validation import ValidatedBatch
from govml.storage import Database, StorageError, StorageTarget, parse_storage_url

_log = logging.getLogger(__name__)

DEFAULT_CPU_WATTS = 15.0  # one fully busy server core; override with GOVML_CPU_WATTS
MAX_BATCH_RECORDS = 1000
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS predictions (
    id {serial},
    ts {real} NOT NULL,
    model TEXT NOT NULL,
    version TEXT,
    endpoint TEXT NOT NULL,
    features TEXT NOT NULL,
    prediction TEXT NOT NULL,
    latency_ms {real}
)""",
    "CREATE INDEX IF NOT EXISTS predictions_model_ts ON predictions (model, ts)",
)


@dataclass(frozen=True)
class CarbonSettings:
    cpu_watts: float
    grid_g_per_kwh: float
    country_iso_code: str

    def energy_kwh(self, cpu_seconds: float) -> float:
        return cpu_seconds * self.cpu_watts / 3_600_000.0

    def emissions_g(self, cpu_seconds: float) -> float:
        return self.energy_kwh(cpu_seconds) * self.grid_g_per_kwh


class ServingMetrics:
    """All serving metrics on one private registry (so tests and several apps never collide)."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("govml_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "govml_request_latency_seconds", "Request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter("govml_request_errors", "Refused or failed requests", ["endpoint", "kind"], registry=r)
        self.predictions = Counter("govml_predictions", "Rows scored", ["model"], registry=r)
        self.predicted_class = Counter("govml_predicted_class", "Predictions per class", ["model", "label"], registry=r)
        self.score = Histogram(
            "govml_prediction_score", "Positive-class probability or regression output", ["model"],
            buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0), registry=r,
        )
        self.energy = Counter("govml_energy_kwh", "Estimated CPU energy of predictions", ["model"], registry=r)
        self.carbon = Counter("govml_carbon_grams", "Estimated emissions of predictions, g CO2e", ["model"], registry=r)
        self.carbon_per_prediction = Gauge(
            "govml_carbon_grams_per_prediction", "Emissions per scored row of the last request, g CO2e",
            ["model"], registry=r,
        )
        self.drift_psi = Gauge("govml_drift_psi", "PSI of live inputs vs training", ["model", "column"], registry=r)
        self.drift_p = Gauge(
            "govml_drift_p_value", "KS (numeric) or chi-squared (categorical) p-value", ["model", "column"], registry=r
        )
        self.drift_flag = Gauge("govml_drift_detected", "1 when the column drifted", ["model", "column"], registry=r)
        self.drift_share = Gauge("govml_drift_share", "Share of columns drifted", ["model"], registry=r)
        self.drift_rows = Gauge("govml_drift_window_rows", "Rows in the drift window", ["model"], registry=r)
        self.log_dropped = Counter("govml_prediction_log_dropped", "Log records dropped (queue full)", registry=r)
        self.log_written = Counter("govml_prediction_log_written", "Rows written to the prediction log", registry=r)
        self.queue_depth = Gauge("govml_prediction_log_queue", "Records waiting for the writer", registry=r)
        self.info = Gauge("govml_model_info", "The served model", ["model", "version", "inference_path"], registry=r)
        self.model = model


@dataclass(frozen=True)
class LogRecord:
    """One request's inputs and outputs; rows are built on the writer thread, not the request's."""

    ts: float
    endpoint: str
    inputs: ValidatedBatch
    labels: np.ndarray
    probabilities: np.ndarray | None
    latency_ms: float

    def feature_json(self) -> list[str]:
        """One JSON object per row (missing values as null), encoded by pandas in C."""
        return self.inputs.json_rows()

    def prediction_json(self) -> list[str]:
        """``{"label": ..., "proba": [...]}`` per row, or the bare label when there are no probabilities."""
        if self.probabilities is None or self.labels.ndim != 1:  # a pyfunc may return several outputs per row
            return [json.dumps(v) for v in self.labels.tolist()]
        frame = pd.DataFrame({"label": self.labels, "proba": list(self.probabilities)})
        return frame.to_json(orient="records", lines=True, double_precision=15).splitlines()


def _batch_json(batch: list[LogRecord]) -> tuple[list[str], list[str]]:
    """Feature and prediction JSON of every row of ``batch``, each encoded in one pandas call, not one per record."""
    features = ValidatedBatch.concat([r.inputs for r in batch]).json_rows()
    widths = {r.probabilities.shape[1:] if r.probabilities is not None and r.labels.ndim == 1 else None for r in batch}
    if len(batch) == 1 or len(widths) != 1 or None in widths:
        return features, [p for r in batch for p in r.prediction_json()]
    merged = LogRecord(
        ts=0.0, endpoint="", inputs=batch[0].inputs, latency_ms=0.0, labels=np.concatenate([r.labels for r in batch]),
        probabilities=np.concatenate([r.probabilities for r in batch]),  # type: ignore[misc]
    )
    return features, merged.prediction_json()


class PredictionLog:
    """Batches prediction records into the log and tracks rolling drift, on one background thread.

    ``target`` is a SQLite file or a storage URL (``postgresql://...``, see ``govml.storage``).
    """

    def __init__(
        self,
        target: StorageTarget | str | Path,
        *,
        model: str,
        version: str | None,
        metrics: ServingMetrics,
        reference: DriftReference | None,
        window: int = 5000,
        drift_every: int = 500,
        min_drift_rows: int = 100,
        drift_min_seconds: float = 5.0,
        thresholds: dict[str, float] | None = None,
        max_queue: int = 10_000,
        flush_seconds: float = 0.5,
    ) -> None:
        self.target = target if isinstance(target, StorageTarget) else parse_storage_url(target)
        self.model = model
        self.version = version
        self.metrics = metrics
        self.reference = reference
        self.thresholds = thresholds or {}
        # Recent input frames, oldest first; together at most ``window_rows`` rows (plus one frame).
        self.window: deque[pd.DataFrame] = deque()
        self.window_rows = window
        self._rows_in_window = 0
        # Drift is recomputed at most every ``drift_min_seconds``: under heavy traffic it would
        # otherwise run on every batch and, holding the GIL, slow the requests it watches.
        self.drift_min_seconds = drift_min_seconds
        self._last_drift_at = -math.inf
        self.drift_every = drift_every
        self.min_drift_rows = min_drift_rows
        self.flush_seconds = flush_seconds
        self.last_drift: DriftReport | None = None
        self._queue: queue.Queue[LogRecord | None] = queue.Queue(maxsize=max_queue)
        self._since_drift = 0
        self._thread = threading.Thread(target=self._run, name="govml-prediction-log", daemon=True)
        self._stopped = threading.Event()
        self._db = Database(self.target)  # fails here, at start-up, when the database is unreachable
        self._db.create(_SCHEMA)

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: LogRecord) -> None:
        """Never blocks: a full queue drops the record and counts it."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.metrics.log_dropped.inc()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the writer."""
        self._stopped.set()  # ends the writer's gathering pause at once
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            running = True
            while running:
                batch: list[LogRecord] = []
                try:
                    item = self._queue.get(timeout=self.flush_seconds)
                    if item is None:
                        running = False
                    else:
                        batch.append(item)
                        if self._queue.qsize() < MAX_BATCH_RECORDS:
                            # Let records gather instead of waking (and taking the GIL) per request.
                            self._stopped.wait(self.flush_seconds)
                    while len(batch) < MAX_BATCH_RECORDS:
                        item = self._queue.get_nowait()
                        if item is None:
                            running = False
                            break
                        batch.append(item)
                except queue.Empty:
                    pass
                self.metrics.queue_depth.set(self._queue.qsize())
                if batch:
                    self._write(batch)
                    self._track_drift(batch)
                self._maybe_refresh_drift()
        finally:
            self._db.close()

    def _write(self, batch: list[LogRecord]) -> None:
        features, predictions = _batch_json(batch)
        meta = [(r.ts, r.endpoint, r.latency_ms) for r in batch for _ in range(r.inputs.n_rows)]
        rows = [
            (ts, self.model, self.version, endpoint, feature, prediction, latency_ms)
            for (ts, endpoint, latency_ms), feature, prediction in zip(meta, features, predictions, strict=True)
        ]
        try:
            self._db.write_batch(
                "INSERT INTO predictions (ts, model, version, endpoint, features, prediction, latency_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self.metrics.log_written.inc(len(rows))
        except StorageError as exc:  # a full disk or a lost database must not stop serving; the loss is counted
            _log.error("prediction log write failed: %s", exc)
            self.metrics.log_dropped.inc(len(batch))

    def _track_drift(self, batch: list[LogRecord]) -> None:
        if self.reference is None:
            return
        inputs = ValidatedBatch.concat([r.inputs for r in batch])  # one frame per batch, not per request
        self.window.append(inputs.to_frame())
        self._rows_in_window += inputs.n_rows
        self._since_drift += inputs.n_rows
        while self.window and self._rows_in_window - len(self.window[0]) >= self.window_rows:
            self._rows_in_window -= len(self.window.popleft())

    def _maybe_refresh_drift(self) -> None:
        if self._since_drift < self.drift_every or self._rows_in_window < self.min_drift_rows:
            return
        if time.monotonic() - self._last_drift_at < self.drift_min_seconds:
            return  # checked again after the next batch, or within flush_seconds when idle
        self._since_drift = 0
        self._last_drift_at = time.monotonic()
        self.refresh_drift()

    def refresh_drift(self) -> DriftReport | None:
        """Recompute drift over the window and publish it as gauges."""
        if self.reference is None or not self.window:
            return None
        frame = pd.concat(list(self.window), ignore_index=True).tail(self.window_rows)
        try:
            report = compute_drift(self.reference, frame, **self.thresholds)
        except DataError as exc:
            _log.warning("live drift skipped: %s", exc)
            return None
        self.last_drift = report
        m = self.metrics
        for col in report.columns:
            labels = (self.model, col.column)
            m.drift_psi.labels(*labels).set(col.psi)
            p = col.ks_p_value if col.kind == "numeric" else col.chi2_p_value
            m.drift_p.labels(*labels).set(p if p is not None else float("nan"))
            m.drift_flag.labels(*labels).set(1.0 if col.drifted else 0.0)
        m.drift_share.labels(self.model).set(report.share_drifted)
        m.drift_rows.labels(self.model).set(len(frame))
        return report


def read_logged_inputs(
    target: StorageTarget | str | Path, model: str, *, limit: int = 100_000, since: float | None = None
) -> pd.DataFrame:
    """The most recent logged input rows of ``model`` (newest ``limit``), as a frame."""
    target = target if isinstance(target, StorageTarget) else parse_storage_url(target)
    if target.dialect == "sqlite" and not Path(target.location).exists():
        raise DataError(f"no prediction log at {target}: serve the model and send it traffic first")
    query = "SELECT features FROM predictions WHERE model = ?"
    params: list[Any] = [model]
    if since is not None:
        query += " AND ts >= ?"
        params.append(since)
    query += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    db = Database(target)
    try:
        db.create(_SCHEMA)  # a new PostgreSQL database has no table until a server has started
        rows = [json.loads(text) for (text,) in db.execute(query, params)]
    finally:
        db.close()
    if not rows:
        raise DataError(f"the prediction log at {target} holds no rows for model {model!r}")
    return pd.DataFrame(rows[::-1])


def score_for_histogram(probabilities: np.ndarray | None, labels: np.ndarray) -> np.ndarray | None:
    """Positive-class probability (binary) or the regression output; None otherwise."""
    if probabilities is not None:
        return probabilities[:, 1] if probabilities.ndim == 2 and probabilities.shape[1] == 2 else None
    if labels.dtype.kind in "fi":
        return labels.astype(float)
    return None
