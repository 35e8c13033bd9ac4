"""govml run vs a hand-written sklearn + Optuna + MLflow script on the credit-risk example.

    .venv/bin/python benchmarks/pipeline.py [--trials 20] [--repeat 1]

Both run in their own process with a fresh SQLite MLflow store and the same number of
LightGBM trials (no timeout), so they do the same search; govml also validates the
data, computes drift, trains two baselines, bootstraps confidence intervals and
measures carbon. Prints wall time and peak resident memory of each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB) of a child process."""
    wrapper = (
        "import resource, subprocess, sys;"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "sys.stdout.write(r.stdout[-600:]); sys.stderr.write(r.stderr[-2000:]);"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        "sys.exit(r.returncode)"
    )
    started = time.perf_counter()
    result = subprocess.run([PYTHON, "-c", wrapper, *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{result.stdout}\n{result.stderr}")
    peak_kb = int(result.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    return wall, peak_kb / 1024, result.stdout.rsplit("PEAK_KB", 1)[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            config = yaml.safe_load((ROOT / "examples/credit-risk/pipeline.yaml").read_text())
            for key in ("train", "test"):
                config["data"][key] = str(ROOT / "examples/credit-risk" / config["data"][key])
            config["training"]["search"] = {"n_trials": args.trials, "timeout_seconds": None, "metric": "roc_auc"}
            path = Path(tmp) / "pipeline.yaml"
            path.write_text(yaml.safe_dump(config))
            env = {**os.environ, "GOVML_HOME": str(Path(tmp) / "home")}
            env.pop("MLFLOW_TRACKING_URI", None)
            govml_wall, govml_mem, _ = _measure([str(Path(PYTHON).parent / "govml"), "run", "--quiet", str(path)], env)
            uri = f"sqlite:///{Path(tmp) / 'hand.db'}"
            hand_wall, hand_mem, hand_out = _measure(
                [PYTHON, str(ROOT / "benchmarks/_handwritten_pipeline.py"), uri, str(args.trials)], env
            )
            rows.append((govml_wall, govml_mem, hand_wall, hand_mem, hand_out))
    print(f"credit-risk, LightGBM, {args.trials} trials, {os.cpu_count()} cores")
    print(f"{'':24}{'wall s':>10}{'peak MiB':>10}")
    for govml_wall, govml_mem, hand_wall, hand_mem, hand_out in rows:
        print(f"{'govml run':24}{govml_wall:10.1f}{govml_mem:10.0f}")
        print(f"{'hand-written script':24}{hand_wall:10.1f}{hand_mem:10.0f}")
        print(f"{'ratio govml / script':24}{govml_wall / hand_wall:10.2f}")
        print(f"script: {hand_out}")


if __name__ == "__main__":
    main()
