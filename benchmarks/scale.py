"""Batch scoring at scale: `govml score` with the local and the Ray engine, side by side.

    .venv/bin/python benchmarks/scale.py [--rows 5000000] [--chunk-rows 100000] [--engines local ray]
    .venv/bin/python benchmarks/scale.py --shap-rows 20000   # SHAP rows/s, in process and in Ray tasks

Trains the credit-risk model once (a short search) in a fresh GOVML_HOME, generates an
Adult-like Parquet file of ``--rows`` rows in chunks (rows resampled from UCI Adult,
numbers jittered), then runs `govml score` once per engine in its own process. For each
it prints rows/s and the peak memory of the whole process tree (the command and, for
Ray, every Ray process it started), sampled every 0.2 s, two ways: the sum of RSS, which
counts a shared page (Ray's object store, shared libraries) once per process that maps
it, and the sum of PSS (proportional set size), which splits each shared page between
the processes that map it and so adds up to the memory the tree really uses.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "examples/credit-risk/data/adult_train.csv.gz"
_JITTER = {"age": (17, 90), "hours_per_week": (1, 99)}


def write_adult_like(path: Path, rows: int, *, seed: int = 0, chunk_rows: int = 250_000) -> Path:
    """Write ``rows`` Adult-like rows (no target) to a Parquet or CSV file, one chunk at a time."""
    pool = pacsv.read_csv(ADULT).drop_columns(["income"])
    rng = np.random.default_rng(seed)
    writer: pq.ParquetWriter | pacsv.CSVWriter
    writer = pq.ParquetWriter(path, pool.schema) if path.suffix == ".parquet" else pacsv.CSVWriter(path, pool.schema)
    with writer:
        for start in range(0, rows, chunk_rows):
            size = min(chunk_rows, rows - start)
            chunk = pool.take(pa.array(rng.integers(0, pool.num_rows, size)))
            for name, (low, high) in _JITTER.items():
                values = chunk.column(name).to_numpy() + rng.integers(-2, 3, size)
                chunk = chunk.set_column(
                    chunk.schema.get_field_index(name), name, pa.array(np.clip(values, low, high))
                )
            writer.write_table(chunk)
    return path


def _tree_memory(process: psutil.Process) -> tuple[int, int]:  # type: ignore[name-defined]  # noqa: F821
    """(sum of RSS, sum of PSS) in bytes over ``process`` and all its descendants."""
    import psutil

    rss = pss = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += info.pss
    return rss, pss


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    """Wall seconds, peak RSS and peak PSS of the process tree (bytes) and stdout of ``cmd``."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    peak_rss = peak_pss = 0
    while child.poll() is None:
        try:
            rss, pss = _tree_memory(watched)
        except psutil.NoSuchProcess:
            break
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.2)
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - started, peak_rss, peak_pss, out.strip()


def train_model(home: Path) -> None:
    """Register credit-risk in ``home`` with a short search (the model, not the search, is measured)."""
    sys.path.insert(0, str(ROOT))
    from govml.pipeline import run_pipeline
    from tests.conftest import write_pipeline

    os.environ["GOVML_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    short = {"params": {"n_estimators": 200}, "search": {"n_trials": 2, "timeout_seconds": 120}}
    run_pipeline(write_pipeline(home, "credit-risk", training=short))


def shap_throughput(rows: int) -> None:
    """Print SHAP rows/s of the credit-risk-like model (LightGBM, 200 trees): in process, then in Ray tasks.

    ``rows`` Adult test rows (resampled) are explained once in this process and twice through
    ``RayEvaluation`` on a local Ray of 2 CPUs (the first Ray pass includes the workers' start).
    """
    sys.path.insert(0, str(ROOT))
    import ray
    from lightgbm import LGBMClassifier

    from govml.compute.distributed_eval import RayEvaluation
    from govml.evaluation.explanations import build_row_explainer
    from tests.evaluation.datasets import adult, fit_pipeline

    X, y = adult()
    model = fit_pipeline(X, y, LGBMClassifier(n_estimators=200, verbose=-1, n_jobs=1, random_state=0))
    explained_rows = adult(split="test")[0].sample(rows, replace=True, random_state=0).reset_index(drop=True)
    explainer = build_row_explainer(model, X.head(100))
    started = time.perf_counter()
    local = explainer.explain(explained_rows)
    timings = [("local", time.perf_counter() - started)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        evaluator = RayEvaluation(parallelism=2)
        for label in ("ray (cold)", "ray (warm)"):
            started = time.perf_counter()
            remote = evaluator.explain_rows(explainer, explained_rows)
            timings.append((label, time.perf_counter() - started))
        assert np.abs(remote.values - local.values).max() <= 1e-9
    finally:
        ray.shutdown()
    print(f"{'SHAP':<12}{'rows':>10}{'tasks':>7}{'wall s':>9}{'rows/s':>10}")
    for label, seconds in timings:
        tasks = 1 if label == "local" else evaluator.runs[-1].tasks
        print(f"{label:<12}{rows:>10,}{tasks:>7}{seconds:>9.1f}{rows / seconds:>10,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--workdir", type=Path, default=None, help="Keep files here (default: a temp dir).")
    parser.add_argument("--shap-rows", type=int, default=0,
                        help="Instead of scoring: SHAP rows/s in process and in Ray tasks on this many rows.")
    args = parser.parse_args()
    if args.shap_rows:
        shap_throughput(args.shap_rows)
        return
    with tempfile.TemporaryDirectory(prefix="govml-scale-") as tmp:
        work = args.workdir or Path(tmp)
        home = work / "home"
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "mlflow.db").exists():
            train_model(home)
        source = work / f"adult-{args.rows}.parquet"
        if not source.exists():
            started = time.perf_counter()
            write_adult_like(source, args.rows)
            print(f"generated {args.rows:,} rows ({source.stat().st_size / 2**20:.0f} MiB Parquet) "
                  f"in {time.perf_counter() - started:.0f}s")
        env = {**os.environ, "GOVML_HOME": str(home)}
        env.pop("MLFLOW_TRACKING_URI", None)
        results = []
        for engine in args.engines:
            target = work / f"scored-{engine}-{time.time_ns()}.parquet"
            cmd = [sys.executable, "-m", "govml", "score", "credit-risk@candidate", str(source), str(target),
                   "--engine", engine, "--chunk-rows", str(args.chunk_rows)]
            seconds, peak_rss, peak_pss, out = measure(cmd, env)
            print(out)
            results.append((engine, seconds, peak_rss, peak_pss))
        print(f"\n{'engine':<8}{'rows':>12}{'wall s':>10}{'rows/s':>12}{'peak RSS MiB':>14}{'peak PSS MiB':>14}")
        for engine, seconds, rss, pss in results:
            print(f"{engine:<8}{args.rows:>12,}{seconds:>10.1f}{args.rows / seconds:>12,.0f}"
                  f"{rss / 2**20:>14,.0f}{pss / 2**20:>14,.0f}")


if __name__ == "__main__":
    main()
