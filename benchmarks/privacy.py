"""Accuracy against epsilon for govml's differentially private models on Adult.

    .venv/bin/python benchmarks/privacy.py
    .venv/bin/python benchmarks/privacy.py --epsilons 0.1 1 10 --seeds 3

Trains each diffprivlib model (``govml.mitigation.dp.train_dp_model``) on the Adult
training file (``fnlwgt`` dropped) and scores it on the test file, averaged over seeds,
beside the non-private scikit-learn counterpart. Also prints the membership-inference
AUC of the non-private and the epsilon-1 logistic regression.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline

from govml.evaluation.privacy import membership_inference_risk
from govml.features.preprocess import build_preprocessor, split_columns
from govml.mitigation.dp import DP_MODELS, train_dp_model

DATA = Path(__file__).resolve().parents[1] / "examples" / "credit-risk" / "data"
NON_PRIVATE = {
    "logistic_regression": lambda: LogisticRegression(max_iter=1000),
    "naive_bayes": GaussianNB,
    "random_forest": lambda: RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0),
}


def _load(split: str) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.read_csv(DATA / f"adult_{split}.csv.gz", skipinitialspace=True)
    return frame.drop(columns=["income", "fnlwgt"]), (frame["income"] == ">50K").astype(int).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.1, 0.5, 1.0, 5.0, 10.0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    X, y = _load("train")
    X_test, y_test = _load("test")
    preprocess = build_preprocessor(split_columns(X))
    table: dict[str, dict[str, str]] = {}
    for name in DP_MODELS:
        row: dict[str, str] = {}
        for epsilon in args.epsilons:
            started = time.perf_counter()
            scores = [
                np.mean(train_dp_model(preprocess, X, y, model=name, epsilon=epsilon, seed=seed)[0]
                        .predict(X_test) == y_test)
                for seed in range(args.seeds)
            ]
            seconds = (time.perf_counter() - started) / args.seeds
            row[f"eps={epsilon:g}"] = f"{np.mean(scores):.3f} ± {np.std(scores):.3f}"
            print(f"{name} epsilon={epsilon:g}: {row[f'eps={epsilon:g}']} ({seconds:.1f} s per fit)", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = Pipeline([("preprocess", preprocess), ("model", NON_PRIVATE[name]())]).fit(X, y)
        row["non-private"] = f"{np.mean(plain.predict(X_test) == y_test):.3f}"
        table[name] = row
    print("\nAdult test accuracy (mean ± std over seeds); majority class:", f"{1 - y_test.mean():.3f}")
    print(pd.DataFrame(table).T.to_string())

    plain = Pipeline([("preprocess", preprocess), ("model", LogisticRegression(max_iter=1000))]).fit(X, y)
    private, _ = train_dp_model(preprocess, X, y, epsilon=1.0)
    for label, model in (("logistic regression", plain), ("DP logistic regression eps=1", private)):
        risk = membership_inference_risk(model, X, y, X_test, y_test)
        print(f"membership inference, {label}: AUC {risk.auc:.3f}, advantage {risk.advantage:.3f}")


if __name__ == "__main__":
    main()
