"""Drift statistics: a compact training reference and a vectorised comparison against a batch.

Numeric columns are compared with the population stability index (PSI) over the
reference's quantile bins and an exact two-sample Kolmogorov-Smirnov statistic
between the reference's quantile sketch and the batch. Categorical columns are
compared with a chi-squared test of homogeneity and the Jensen-Shannon distance
(base 2, in [0, 1]). Missing values are a bucket of their own in PSI, chi-squared
and Jensen-Shannon, so a column that suddenly goes missing counts as drift; KS looks
at present values only.

A column is flagged as drifted when the change is both statistically significant
(p-value below ``p_value``; for numeric columns the smaller of the KS p-value and
a chi-squared p-value over the PSI buckets) and material (PSI at or above ``psi_threshold`` for
numeric columns, Jensen-Shannon distance at or above ``js_threshold`` for
categorical ones). Significance alone flags negligible shifts once batches reach a
million rows; effect size alone flags noise in batches of a few dozen rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from scipy.spatial.distance import jensenshannon

from govml.errors import DataError

OTHER = "__other__"
MISSING = "__missing__"
_PSI_FLOOR = 1e-4  # proportion used for empty buckets so PSI stays finite
_MIN_EXPECTED = 5.0  # chi-squared cells expected below this are pooled
_KS_EXACT_MAX_N = 10_000  # above this effective size the asymptotic KS p-value is used


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericReference(_Model):
    """Reference distribution of one numeric column."""

    kind: Literal["numeric"] = "numeric"
    bin_edges: list[float] = Field(
        description="minimum, inner quantile edges, just-above-maximum; bin i is [edge[i-1], edge[i])"
    )
    proportions: list[float] = Field(description="share of rows per bin, then the missing share")
    sketch: list[float] = Field(description="sorted quantile sketch of the present values")
    n_present: int
    null_rate: float


class CategoricalReference(_Model):
    """Reference distribution of one categorical column (values compared as strings)."""

    kind: Literal["categorical"] = "categorical"
    categories: list[str] = Field(description="categories kept, most frequent first")
    proportions: list[float] = Field(description="share per kept category, then other, then missing")
    null_rate: float


ColumnReference = Annotated[NumericReference | CategoricalReference, Field(discriminator="kind")]


class DriftReference(_Model):
    """What a batch is compared against: per-column distributions of the training data."""

    n_rows: int
    columns: dict[str, ColumnReference]

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        numeric_bins: int = 10,
        max_categories: int = 50,
        sketch_size: int = 2000,
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
    ) -> DriftReference:
        """Summarise ``df``; column kinds are inferred from dtypes unless declared."""
        if len(df) == 0:
            raise DataError("cannot build a drift reference from an empty frame")
        if numeric_bins < 2 or max_categories < 1 or sketch_size < 10:
            raise DataError("numeric_bins must be >= 2, max_categories >= 1, sketch_size >= 10")
        declared_numeric = set(numeric or [])
        declared_categorical = set(categorical or [])
        columns: dict[str, NumericReference | CategoricalReference] = {}
        for name in df.columns:
            series = df[name]
            if name in declared_categorical:
                is_numeric = False
            elif name in declared_numeric:
                is_numeric = True
            else:
                is_numeric = _is_numeric(series)
            key = str(name)
            if is_numeric:
                columns[key] = _numeric_reference(key, series, numeric_bins, sketch_size)
            else:
                columns[key] = _categorical_reference(series, max_categories)
        return cls(n_rows=len(df), columns=columns)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> DriftReference:
        return cls.model_validate_json(text)


class DriftThresholds(_Model):
    psi_threshold: float = 0.2
    p_value: float = 0.05
    js_threshold: float = 0.1


class ColumnDrift(_Model):
    """Drift of one column between the reference and a batch."""

    column: str
    kind: Literal["numeric", "categorical"]
    psi: float
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    chi2_statistic: float | None = None
    chi2_p_value: float | None = None
    js_distance: float | None = None
    null_rate_reference: float
    null_rate_batch: float
    unseen_rate: float | None = Field(
        default=None, description="categorical: share of batch rows whose category the reference never saw"
    )
    drifted: bool


class DriftReport(_Model):
    """One row per column, and which columns drifted."""

    columns: list[ColumnDrift]
    drifted_columns: list[str]
    share_drifted: float
    n_reference: int
    n_batch: int
    thresholds: DriftThresholds


def compute_drift(
    reference: DriftReference,
    batch: pd.DataFrame,
    *,
    psi_threshold: float = 0.2,
    p_value: float = 0.05,
    js_threshold: float = 0.1,
) -> DriftReport:
    """Compare ``batch`` column by column with ``reference``; extra batch columns are ignored."""
    if len(batch) == 0:
        raise DataError("the batch is empty: drift needs at least one row")
    missing = [c for c in reference.columns if c not in batch.columns]
    if missing:
        raise DataError(f"the batch lacks column(s) {missing} that the drift reference holds")
    thresholds = DriftThresholds(psi_threshold=psi_threshold, p_value=p_value, js_threshold=js_threshold)
    rows: list[ColumnDrift] = []
    for name, ref in reference.columns.items():
        if isinstance(ref, NumericReference):
            rows.append(_numeric_drift(name, ref, reference.n_rows, batch[name], thresholds))
        else:
            rows.append(_categorical_drift(name, ref, reference.n_rows, batch[name], thresholds))
    drifted = [r.column for r in rows if r.drifted]
    return DriftReport(
        columns=rows,
        drifted_columns=drifted,
        share_drifted=len(drifted) / len(rows) if rows else 0.0,
        n_reference=reference.n_rows,
        n_batch=len(batch),
        thresholds=thresholds,
    )


# --- statistics (pure functions on arrays) -------------------------------------------


def population_stability_index(reference: np.ndarray, batch: np.ndarray) -> float:
    """PSI between two proportion vectors over the same buckets (empty buckets floored)."""
    ref = np.maximum(reference, _PSI_FLOOR)
    cur = np.maximum(batch, _PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def chi2_homogeneity(reference_counts: np.ndarray, batch_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared test that two count vectors come from one distribution (2 x k table).

    Buckets with an expected count below 5 are pooled into one (Cochran's rule): a
    single rare category in a small batch would otherwise dominate the statistic.
    """
    table = np.vstack([reference_counts, batch_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    sparse = _expected(table).min(axis=0) < _MIN_EXPECTED
    if sparse.any():
        table = np.column_stack([table[:, ~sparse], table[:, sparse].sum(axis=1)])
    if table.shape[1] < 2:
        return 0.0, 1.0
    expected = _expected(table)
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1))


def _expected(table: np.ndarray) -> np.ndarray:
    return table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()


def ks_against_sketch(sketch: np.ndarray, n_reference: int, batch_sorted: np.ndarray) -> tuple[float, float]:
    """Exact sup-distance between the sketch's ECDF and the batch's ECDF, with its p-value.

    The statistic is exact for the sketch (which is within ``1/len(sketch)`` of the
    reference's ECDF); the p-value uses the reference's and batch's real sizes, as
    ``scipy.stats.ks_2samp(method="asymp")`` does.
    """
    n = batch_sorted.size
    if n == 0 or sketch.size == 0:
        return 0.0, 1.0
    points, sketch_le = np.unique(sketch, return_counts=True)
    ref_cdf = np.cumsum(sketch_le) / sketch.size  # F_ref at each distinct sketch value
    batch_le = np.searchsorted(batch_sorted, points, side="right") / n  # F_batch(x)
    batch_lt = np.searchsorted(batch_sorted, points, side="left") / n  # F_batch(x-)
    # F_ref is flat between sketch points, so the supremum is reached at a sketch point or
    # just before the next one (F_batch's left limit there); below the first point F_ref = 0.
    after = np.append(batch_lt[1:], 1.0)
    statistic = float(
        max(
            batch_lt[0],
            np.max(np.abs(ref_cdf - batch_le)),
            np.max(np.abs(ref_cdf - after)),
        )
    )
    effective_n = n_reference * n / (n_reference + n)
    if effective_n <= _KS_EXACT_MAX_N:
        p = float(stats.kstwo.sf(statistic, max(1, round(effective_n))))
    else:  # the limiting Kolmogorov distribution: kstwo's exact sf costs ~0.1 s here
        p = float(stats.kstwobign.sf(statistic * math.sqrt(effective_n)))
    return statistic, min(1.0, max(0.0, p))


# --- per-column work -----------------------------------------------------------------


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _as_float(name: str, series: pd.Series) -> np.ndarray:
    """Float values with non-finite ones as NaN; a clear error for non-numeric data."""
    try:
        values = pd.to_numeric(series, errors="raise")
        array = np.asarray(values.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    except (ValueError, TypeError) as exc:
        raise DataError(f"column {name!r} should be numeric for drift but holds {exc}") from None
    if not np.isfinite(array).all():
        array = np.where(np.isfinite(array), array, np.nan)
    return array


def _numeric_reference(name: str, series: pd.Series, bins: int, sketch_size: int) -> NumericReference:
    values = _as_float(name, series)
    present = np.sort(values[~np.isnan(values)])
    null_rate = 1.0 - present.size / values.size
    if present.size == 0:
        return NumericReference(bin_edges=[], proportions=[0.0, 1.0], sketch=[], n_present=0, null_rate=1.0)
    inner = np.unique(np.quantile(present, np.arange(1, bins) / bins, method="inverted_cdf"))
    # Outer edges at the minimum and just above the maximum give values outside the
    # training range buckets of their own (empty in the reference), so a shift past the
    # range, or any change of a constant column, shows in PSI.
    above_max = np.nextafter(present[-1], np.inf)
    edges = np.concatenate(([present[0]], inner[inner > present[0]], [above_max]))
    counts = _bin_counts(present, edges)
    proportions = np.append(counts / values.size, null_rate)
    if present.size <= sketch_size:
        sketch = present
    else:
        probabilities = (np.arange(sketch_size) + 0.5) / sketch_size
        sketch = np.quantile(present, probabilities, method="inverted_cdf")
    return NumericReference(
        bin_edges=edges.tolist(),
        proportions=proportions.tolist(),
        sketch=sketch.tolist(),
        n_present=int(present.size),
        null_rate=float(null_rate),
    )


def _bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin [edge[i-1], edge[i]) from sorted values, without a pass over the rows."""
    cuts = np.searchsorted(sorted_values, edges, side="left")
    return np.diff(np.concatenate(([0], cuts, [sorted_values.size])))


def _numeric_drift(
    name: str, ref: NumericReference, n_reference: int, series: pd.Series, th: DriftThresholds
) -> ColumnDrift:
    values = _as_float(name, series)
    present = np.sort(values[~np.isnan(values)])
    null_rate = 1.0 - present.size / values.size
    counts = np.append(_bin_counts(present, np.asarray(ref.bin_edges, dtype=float)), values.size - present.size)
    ref_props = np.asarray(ref.proportions, dtype=float)
    psi = population_stability_index(ref_props, counts / values.size)
    chi2, chi2_p = chi2_homogeneity(np.rint(ref_props * n_reference), counts)
    ks, ks_p = ks_against_sketch(np.asarray(ref.sketch, dtype=float), ref.n_present, present)
    # KS sees present values only; chi-squared over the PSI buckets also sees missingness.
    p = min(ks_p, chi2_p)
    return ColumnDrift(
        column=name,
        kind="numeric",
        psi=psi,
        ks_statistic=ks,
        ks_p_value=ks_p,
        chi2_statistic=chi2,
        chi2_p_value=chi2_p,
        null_rate_reference=ref.null_rate,
        null_rate_batch=float(null_rate),
        drifted=bool(p < th.p_value and psi >= th.psi_threshold),
    )


def _categorical_reference(series: pd.Series, max_categories: int) -> CategoricalReference:
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    order = np.argsort(-counts, kind="stable")
    labels = [str(uniques[i]) for i in order]
    by_label: dict[str, int] = {}
    for label, count in zip(labels, counts[order], strict=True):
        by_label[label] = by_label.get(label, 0) + int(count)  # 1 and "1" are one category
    ranked = sorted(by_label.items(), key=lambda kv: -kv[1])
    kept = ranked[:max_categories]
    other = sum(c for _, c in ranked[max_categories:])
    n_missing = int((codes < 0).sum())
    total = len(series)
    proportions = [c / total for _, c in kept] + [other / total, n_missing / total]
    return CategoricalReference(
        categories=[label for label, _ in kept], proportions=proportions, null_rate=n_missing / total
    )


def _categorical_counts(ref: CategoricalReference, series: pd.Series) -> tuple[np.ndarray, int]:
    """Counts per reference bucket (kept categories, other, missing) and the unseen count."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    k = len(ref.categories)
    position = {label: i for i, label in enumerate(ref.categories)}
    seen = set(ref.categories)
    lookup = np.array([position.get(str(u), k) for u in uniques] + [k + 1], dtype=np.int64)
    unseen_codes = [i for i, u in enumerate(uniques) if str(u) not in seen]
    per_unique = np.bincount(codes[codes >= 0], minlength=len(uniques))
    buckets = np.bincount(lookup[codes], minlength=k + 2)  # code -1 indexes the last entry: missing
    return buckets, int(per_unique[unseen_codes].sum()) if unseen_codes else 0


def _categorical_drift(
    name: str, ref: CategoricalReference, n_reference: int, series: pd.Series, th: DriftThresholds
) -> ColumnDrift:
    counts, unseen = _categorical_counts(ref, series)
    n = len(series)
    ref_props = np.asarray(ref.proportions, dtype=float)
    batch_props = counts / n
    chi2, chi2_p = chi2_homogeneity(np.rint(ref_props * n_reference), counts)
    js = float(jensenshannon(ref_props, batch_props, base=2))
    if math.isnan(js):  # both distributions empty cannot happen with n > 0; guard anyway
        js = 0.0
    return ColumnDrift(
        column=name,
        kind="categorical",
        psi=population_stability_index(ref_props, batch_props),
        chi2_statistic=chi2,
        chi2_p_value=chi2_p,
        js_distance=js,
        null_rate_reference=ref.null_rate,
        null_rate_batch=float(counts[-1] / n),
        unseen_rate=unseen / n,
        drifted=bool(chi2_p < th.p_value and js >= th.js_threshold),
    )
