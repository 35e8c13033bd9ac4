"""The hand-written equivalent of `govml run examples/credit-risk/pipeline.yaml`.

What a careful engineer writes with plain pandas + scikit-learn + Optuna + MLflow:
the same data, preprocessing, LightGBM search space, number of trials, final refit,
test metrics and model registration. Run by benchmarks/pipeline.py in a subprocess.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightgbm as lgb
import mlflow
import optuna
import pandas as pd
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

DATA = Path(__file__).resolve().parents[1] / "examples" / "credit-risk" / "data"


def main(tracking_uri: str, n_trials: int) -> None:
    train = pd.read_csv(DATA / "adult_train.csv.gz", skipinitialspace=True).drop(columns=["fnlwgt"])
    test = pd.read_csv(DATA / "adult_test.csv.gz", skipinitialspace=True).drop(columns=["fnlwgt"])
    y_all = (train.pop("income") == ">50K").astype(int).to_numpy()
    y_test = (test.pop("income") == ">50K").astype(int).to_numpy()
    X_tr, X_va, y_tr, y_va = train_test_split(train, y_all, test_size=0.2, random_state=42, stratify=y_all)
    numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in train.columns if c not in numeric]
    pre = ColumnTransformer([
        ("num", Pipeline([("imp", SimpleImputer(strategy="median")), ("sc", StandardScaler())]), numeric),
        ("cat", Pipeline([
            ("imp", SimpleImputer(strategy="constant", fill_value="(missing)")),
            ("oh", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]), categorical),
    ])
    Xt_tr = pre.fit_transform(X_tr.astype({c: object for c in categorical}))
    Xt_va = pre.transform(X_va.astype({c: object for c in categorical}))

    def objective(trial: optuna.Trial) -> float:
        params = {
            "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 15, 127, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "subsample_freq": 1,
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }
        model = lgb.LGBMClassifier(random_state=42, n_jobs=2, verbosity=-1, **params).fit(Xt_tr, y_tr)
        return roc_auc_score(y_va, model.predict_proba(Xt_va)[:, 1])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=42))
    study.optimize(objective, n_trials=n_trials)

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("credit-risk-handwritten")
    with mlflow.start_run():
        best = {**study.best_params, "subsample_freq": 1}
        final = Pipeline([
            ("pre", pre),
            ("model", lgb.LGBMClassifier(random_state=42, n_jobs=2, verbosity=-1, **best)),
        ]).fit(train.astype({c: object for c in categorical}), y_all)
        proba = final.predict_proba(test.astype({c: object for c in categorical}))[:, 1]
        mlflow.log_params(best)
        mlflow.log_metrics({
            "test_accuracy": accuracy_score(y_test, proba > 0.5),
            "test_roc_auc": roc_auc_score(y_test, proba),
        })
        example = test.head(5).astype({c: object for c in categorical})
        mlflow.sklearn.log_model(
            final, name="model", signature=infer_signature(example, final.predict(example)),
            input_example=example, registered_model_name="credit-risk-handwritten",
            # MLflow 3's default skops format refuses LightGBM types; cloudpickle, as govml uses
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
        print(f"test accuracy {accuracy_score(y_test, proba > 0.5):.4f}, roc_auc {roc_auc_score(y_test, proba):.4f}")
    print(f"best validation roc_auc {study.best_value:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
