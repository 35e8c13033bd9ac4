"""govml's fairness mitigation beside a hand-written fairlearn ExponentiatedGradient, on Adult.

    .venv/bin/python benchmarks/fairness.py                 # govml at bound 0.1 + the reference
    .venv/bin/python benchmarks/fairness.py --bounds 0.1 0.02 --skip-reference

Data: examples/credit-risk (UCI Adult, official train/test split), ``fnlwgt`` dropped as
in the example YAML, sensitive attribute ``sex``. govml trains the default LightGBM behind
its own preprocessing on 80% of the training file, mitigates with every method and picks
on the other 20%; the reference is what a user would write by hand: fairlearn's
ExponentiatedGradient(LGBMClassifier(), DemographicParity(difference_bound=0.01)) on the
whole training file. Both are scored on the test file: accuracy, pairwise demographic
parity difference on ``sex``, wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from fairlearn.reductions import DemographicParity, ExponentiatedGradient
from lightgbm import LGBMClassifier
from sklearn.pipeline import Pipeline

from govml.evaluation.fairness import demographic_parity_difference
from govml.features.preprocess import build_preprocessor, split_columns
from govml.mitigation.fairness import mitigate

DATA = Path(__file__).resolve().parents[1] / "examples" / "credit-risk" / "data"


def _load(split: str) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.read_csv(DATA / f"adult_{split}.csv.gz", skipinitialspace=True)
    y = (frame["income"] == ">50K").astype(int).to_numpy()
    return frame.drop(columns=["income", "fnlwgt"]), y


def _row(name: str, y: np.ndarray, pred: np.ndarray, sex: pd.Series, seconds: float) -> dict[str, object]:
    return {
        "model": name,
        "test_accuracy": round(float(np.mean(pred == y)), 4),
        "test_dp_difference": round(float(demographic_parity_difference(pred, sex) or 0.0), 4),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bounds", type=float, nargs="+", default=[0.1])
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--plots", type=Path, default=None, help="folder for the trade-off plots")
    args = parser.parse_args()

    X, y = _load("train")
    X_test, y_test = _load("test")
    valid = np.random.default_rng(args.seed).random(len(X)) < 0.2
    X_train, y_train, X_valid, y_valid = X[~valid], y[~valid], X[valid], y[valid]
    rows = []

    started = time.perf_counter()
    model = Pipeline([
        ("preprocess", build_preprocessor(split_columns(X_train))),
        ("model", LGBMClassifier(verbose=-1, n_jobs=2, random_state=0)),
    ]).fit(X_train, y_train)
    rows.append(_row("unmitigated LightGBM", y_test, model.predict(X_test), X_test["sex"],
                     time.perf_counter() - started))

    for bound in args.bounds:
        started = time.perf_counter()
        result = mitigate(model, X_train, y_train, X_valid, y_valid, "sex", bound=bound, out_dir=args.plots)
        seconds = time.perf_counter() - started
        print(f"\ngovml mitigate, bound {bound}: candidates on validation ({seconds:.0f} s)")
        print(result.table().drop(columns=["needs_sensitive_feature"]).to_string(index=False))
        if result.model is None:
            print(f"no candidate met bound {bound}")
            continue
        rows.append(_row(f"govml mitigate bound={bound} -> {result.chosen}", y_test,
                         result.model.predict(X_test), X_test["sex"], seconds))

    if not args.skip_reference:
        started = time.perf_counter()
        preprocess = build_preprocessor(split_columns(X)).fit(X)
        reference = ExponentiatedGradient(
            LGBMClassifier(verbose=-1, n_jobs=2, random_state=0),
            constraints=DemographicParity(difference_bound=0.01),
        ).fit(preprocess.transform(X), y, sensitive_features=X["sex"])
        pred = reference.predict(preprocess.transform(X_test), random_state=0)
        rows.append(_row("hand-written fairlearn ExponentiatedGradient bound=0.01", y_test, pred,
                         X_test["sex"], time.perf_counter() - started))

    print("\nAdult test split (16,281 rows), sensitive attribute sex")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
