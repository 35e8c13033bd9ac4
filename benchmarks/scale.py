"""Batch scoring at scale: `govml score` with the local and the Ray engine, side by side.

    .venv/bin/python benchmarks/scale.py [--rows 5000000] [--chunk-rows 100000] [--engines local ray]

Trains the credit-risk model once (a short search) in a fresh GOVML_HOME, generates an
Adult-like Parquet file of ``--rows`` rows in chunks (rows resampled from UCI Adult,
numbers jittered), then runs `govml score` once per engine in its own process. For each
it prints rows/s and the peak resident memory of the whole process tree (the command
and, for Ray, every Ray process it started), sampled every 0.2 s.
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


def _tree_rss(process: psutil.Process) -> int:  # type: ignore[name-defined]  # noqa: F821
    import psutil

    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS of the process tree (bytes) and stdout of ``cmd``."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, _tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - started, peak, out.strip()


def train_model(home: Path) -> None:
    """Register credit-risk in ``home`` with a short search (the model, not the search, is measured)."""
    sys.path.insert(0, str(ROOT))
    from govml.pipeline import run_pipeline
    from tests.conftest import write_pipeline

    os.environ["GOVML_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    short = {"params": {"n_estimators": 200}, "search": {"n_trials": 2, "timeout_seconds": 120}}
    run_pipeline(write_pipeline(home, "credit-risk", training=short))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--workdir", type=Path, default=None, help="Keep files here (default: a temp dir).")
    args = parser.parse_args()
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
            seconds, peak, out = measure(cmd, env)
            print(out)
            results.append((engine, seconds, peak))
        print(f"\n{'engine':<8}{'rows':>12}{'wall s':>10}{'rows/s':>12}{'peak RSS MiB':>14}")
        for engine, seconds, peak in results:
            print(f"{engine:<8}{args.rows:>12,}{seconds:>10.1f}{args.rows / seconds:>12,.0f}{peak / 2**20:>14,.0f}")


if __name__ == "__main__":
    main()
