"""Drift statistics against SciPy's reference implementations and on real data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from govml.errors import DataError
from govml.features.drift import (
    CategoricalReference,
    DriftReference,
    NumericReference,
    compute_drift,
    population_stability_index,
)

DATA = Path(__file__).resolve().parents[2] / "examples" / "credit-risk" / "data"


@pytest.fixture(scope="module")
def adult() -> tuple[pd.DataFrame, pd.DataFrame]:
    train = pd.read_csv(DATA / "adult_train.csv.gz").drop(columns="income")
    test = pd.read_csv(DATA / "adult_test.csv.gz").drop(columns="income")
    return train, test


def _column(report, name):  # type: ignore[no-untyped-def]
    return next(c for c in report.columns if c.column == name)


def test_ks_statistic_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.poisson(4, 1500).astype(float)})
    batch = pd.DataFrame({"x": rng.poisson(4.4, 3000).astype(float)})
    reference = DriftReference.from_frame(ref)  # 1,500 values fit the sketch: exact ECDF
    row = _column(compute_drift(reference, batch), "x")
    expected = stats.ks_2samp(ref["x"], batch["x"], method="asymp")
    assert row.ks_statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert row.ks_p_value == pytest.approx(expected.pvalue, rel=1e-6)


def test_ks_statistic_from_sketch_is_close_for_large_reference() -> None:
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.lognormal(0, 1, 200_000)})
    batch = pd.DataFrame({"x": rng.lognormal(0.05, 1, 50_000)})
    row = _column(compute_drift(DriftReference.from_frame(ref, sketch_size=2000), batch), "x")
    exact = stats.ks_2samp(ref["x"], batch["x"]).statistic
    assert abs(row.ks_statistic - exact) <= 1 / 2000


def test_categorical_statistics_match_scipy() -> None:
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"c": rng.choice(list("abcd"), 4000, p=[0.4, 0.3, 0.2, 0.1])})
    batch = pd.DataFrame({"c": rng.choice(list("abcd"), 1000, p=[0.25, 0.25, 0.25, 0.25])})
    row = _column(compute_drift(DriftReference.from_frame(ref), batch), "c")
    table = pd.concat([ref["c"].value_counts(), batch["c"].value_counts()], axis=1).to_numpy().T
    chi2 = stats.chi2_contingency(table, correction=False)
    assert row.chi2_statistic == pytest.approx(chi2.statistic, rel=1e-9)
    assert row.chi2_p_value == pytest.approx(chi2.pvalue, rel=1e-6, abs=1e-300)
    p = ref["c"].value_counts(normalize=True).sort_index().to_numpy()
    q = batch["c"].value_counts(normalize=True).sort_index().to_numpy()
    assert row.js_distance == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert row.drifted


def test_psi_is_zero_for_equal_and_grows_with_shift() -> None:
    p = np.array([0.25, 0.25, 0.5])
    assert population_stability_index(p, p) == 0.0
    small = population_stability_index(p, np.array([0.3, 0.2, 0.5]))
    large = population_stability_index(p, np.array([0.6, 0.1, 0.3]))
    assert 0 < small < large


def test_no_drift_between_adult_train_and_test(adult: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = adult
    report = compute_drift(DriftReference.from_frame(train), test)
    assert [c.column for c in report.columns] == list(train.columns)
    assert report.drifted_columns == []
    assert report.share_drifted == 0.0
    assert report.n_batch == len(test)
    assert {c.kind for c in report.columns} == {"numeric", "categorical"}


def test_shifted_columns_are_flagged(adult: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = adult
    shifted = test.copy()
    shifted["age"] = shifted["age"] + 15
    shifted["sex"] = "Female"
    report = compute_drift(DriftReference.from_frame(train), shifted)
    assert set(report.drifted_columns) == {"age", "sex"}
    assert report.share_drifted == pytest.approx(2 / len(train.columns))


def test_small_batches_from_the_reference_are_rarely_flagged(
    adult: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = adult
    reference = DriftReference.from_frame(train)
    flagged = sum(
        len(compute_drift(reference, train.sample(40, random_state=seed)).drifted_columns)
        for seed in range(20)
    )
    assert flagged <= 0.05 * 20 * len(train.columns)  # at most the test's nominal false-alarm rate


def test_nulls_count_as_drift(adult: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = adult
    holed = test.copy()
    half = holed.index[: len(holed) // 2]
    holed.loc[half, "hours_per_week"] = np.nan
    holed.loc[half, "occupation"] = None
    report = compute_drift(DriftReference.from_frame(train), holed)
    hours, occupation = _column(report, "hours_per_week"), _column(report, "occupation")
    assert hours.null_rate_reference == 0.0
    assert hours.null_rate_batch == pytest.approx(0.5, abs=1e-3)
    assert occupation.null_rate_batch > 0.45
    assert hours.drifted and occupation.drifted


def test_unseen_categories_go_to_other() -> None:
    ref = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50})
    batch = pd.DataFrame({"c": ["a"] * 30 + ["zzz"] * 70})
    row = _column(compute_drift(DriftReference.from_frame(ref), batch), "c")
    assert row.unseen_rate == pytest.approx(0.7)
    assert row.drifted


def test_rare_categories_are_folded() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 10 + ["d"] * 6 + ["e"] * 4
    reference = DriftReference.from_frame(pd.DataFrame({"c": values}), max_categories=2)
    col = reference.columns["c"]
    assert isinstance(col, CategoricalReference)
    assert col.categories == ["a", "b"]
    assert col.proportions == pytest.approx([0.5, 0.3, 0.2, 0.0])


def test_constant_columns() -> None:
    ref = pd.DataFrame({"k": [3.0] * 200, "s": ["x"] * 200})
    same = compute_drift(DriftReference.from_frame(ref), ref.iloc[:50])
    assert same.drifted_columns == []
    assert _column(same, "k").psi == 0.0 and _column(same, "k").ks_statistic == 0.0
    moved = compute_drift(DriftReference.from_frame(ref), pd.DataFrame({"k": [9.0] * 100, "s": ["y"] * 100}))
    assert set(moved.drifted_columns) == {"k", "s"}
    assert _column(moved, "k").ks_statistic == 1.0


def test_all_null_reference_column() -> None:
    ref = pd.DataFrame({"x": [np.nan] * 10, "y": range(10)}, dtype=float)
    reference = DriftReference.from_frame(ref)
    assert isinstance(reference.columns["x"], NumericReference)
    report = compute_drift(reference, pd.DataFrame({"x": [1.0] * 10, "y": range(10)}))
    assert _column(report, "x").null_rate_batch == 0.0


def test_declared_kinds_override_dtypes() -> None:
    frame = pd.DataFrame({"code": [1, 2, 3, 1, 2], "n": ["1", "2", "3", "4", "5"]})
    reference = DriftReference.from_frame(frame, categorical=["code"], numeric=["n"])
    assert reference.columns["code"].kind == "categorical"
    assert reference.columns["n"].kind == "numeric"


def test_json_round_trip(adult: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = adult
    reference = DriftReference.from_frame(train)
    restored = DriftReference.from_json(reference.to_json())
    assert restored == reference
    assert compute_drift(restored, test) == compute_drift(reference, test)


def test_bad_inputs_raise_clear_errors(adult: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = adult
    reference = DriftReference.from_frame(train)
    with pytest.raises(DataError, match="empty"):
        compute_drift(reference, test.iloc[:0])
    with pytest.raises(DataError, match="age"):
        compute_drift(reference, test.drop(columns="age"))
    bad = test.copy()
    bad["age"] = "old"
    with pytest.raises(DataError, match="'age' should be numeric"):
        compute_drift(reference, bad)
    with pytest.raises(DataError, match="empty"):
        DriftReference.from_frame(train.iloc[:0])


@pytest.mark.slow
def test_million_rows_by_25_columns_in_a_few_seconds() -> None:
    rng = np.random.default_rng(5)
    rows = 1_000_000
    batch = pd.DataFrame(
        {f"n{i}": rng.normal(size=rows) for i in range(15)}
        | {f"c{i}": rng.choice(np.array(list("abcdefgh"), dtype=object), rows) for i in range(10)}
    )
    reference = DriftReference.from_frame(batch.sample(100_000, random_state=0))
    start = time.perf_counter()
    report = compute_drift(reference, batch)
    assert time.perf_counter() - start < 5.0
    assert report.drifted_columns == []
