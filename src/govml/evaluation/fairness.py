"""Fairness of a binary classifier's predictions, per sensitive attribute and per intersection.

Built on fairlearn's :class:`~fairlearn.metrics.MetricFrame`: selection rate, accuracy,
true and false positive rates and the group size for every group of every sensitive
attribute and of every pair of attributes (e.g. ``sex x race``). Groups smaller than
``min_group_size`` are flagged and left out of the disparities, whose estimates they
would otherwise dominate with noise; the report says which groups were left out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from pydantic import BaseModel, ConfigDict, Field

from govml.errors import DataError

MISSING_GROUP = "(missing)"
INTERSECTION_SEPARATOR = " x "
_MAX_NUMERIC_GROUPS = 10
_NUMERIC_BINS = 4


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def selection_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of rows predicted positive (label 1)."""
    return float(np.mean(y_pred == 1)) if len(y_pred) else float("nan")


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred)) if len(y_pred) else float("nan")


def true_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of actual positives predicted positive; NaN when the group has no positives."""
    positives = y_true == 1
    return float(np.mean(y_pred[positives] == 1)) if positives.any() else float("nan")


def false_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of actual negatives predicted positive; NaN when the group has no negatives."""
    negatives = y_true == 0
    return float(np.mean(y_pred[negatives] == 1)) if negatives.any() else float("nan")


_GROUP_METRICS = {
    "selection_rate": selection_rate,
    "accuracy": accuracy,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
}


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


class GroupMetrics(_Model):
    group: str = Field(description="group label; intersections join values with ' x '")
    count: int
    selection_rate: float
    accuracy: float
    true_positive_rate: float | None = Field(description="None when the group has no positives")
    false_positive_rate: float | None = Field(description="None when the group has no negatives")
    small: bool = Field(description="fewer rows than min_group_size: left out of the disparities")


class FairnessThresholds(_Model):
    demographic_parity_difference_max: float | None = 0.1
    demographic_parity_ratio_min: float | None = 0.8
    equalized_odds_difference_max: float | None = None
    min_group_size: int = 30


class AttributeFairness(_Model):
    """Per-group metrics and disparities for one sensitive attribute or one intersection."""

    attribute: str = Field(description="column name, or 'a x b' for an intersection")
    columns: list[str]
    intersection: bool
    binned: str | None = Field(default=None, description="how a numeric attribute was grouped")
    groups: list[GroupMetrics]
    excluded_groups: list[str] = Field(description="small groups left out of the disparities")
    demographic_parity_difference: float | None
    demographic_parity_ratio: float | None
    equalized_odds_difference: float | None
    status: Literal["pass", "fail", "not_assessable"]
    failures: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class FairnessReport(_Model):
    """What the fairness stage found; ``passed`` covers the gating attributes only."""

    n_rows: int
    overall_selection_rate: float
    overall_accuracy: float
    thresholds: FairnessThresholds
    attributes: list[AttributeFairness]
    gate_on_intersections: bool
    passed: bool
    failures: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    plot: str | None = Field(default=None, description="path of the selection-rate PNG, once drawn")

    def attribute(self, name: str) -> AttributeFairness:
        for item in self.attributes:
            if item.attribute == name:
                return item
        raise KeyError(name)

    def summary_metrics(self) -> dict[str, float]:
        """Flat ``<attribute>.<metric>`` numbers for registry tags and MLflow metrics."""
        out: dict[str, float] = {}
        for item in self.attributes:
            key = item.attribute.replace(INTERSECTION_SEPARATOR, "_x_")
            for name in (
                "demographic_parity_difference",
                "demographic_parity_ratio",
                "equalized_odds_difference",
            ):
                value = getattr(item, name)
                if value is not None:
                    out[f"{key}.{name}"] = value
        return out


def group_labels(column: pd.Series) -> tuple[pd.Series, str | None]:
    """Group labels for one sensitive column: strings, missing values as their own group.

    A numeric column with many distinct values (e.g. age) is cut into quartiles.
    """
    binned = None
    values = column
    if (
        pd.api.types.is_numeric_dtype(column)
        and not pd.api.types.is_bool_dtype(column)
        and column.nunique(dropna=True) > _MAX_NUMERIC_GROUPS
    ):
        values = pd.qcut(column, q=_NUMERIC_BINS, duplicates="drop")
        binned = f"numeric column cut into {_NUMERIC_BINS} quantile bins"
    labels = values.astype(object).where(values.notna(), MISSING_GROUP).astype(str)
    return labels.rename(column.name), binned


def _as_labels(values: object, name: str, n_rows: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or len(array) != n_rows:
        raise DataError(f"{name} must be one-dimensional with {n_rows} rows, got shape {array.shape}")
    if pd.isna(array).any():
        raise DataError(f"{name} holds missing values")
    unexpected = sorted(set(np.unique(array).tolist()) - {0, 1})
    if unexpected:
        raise DataError(
            f"fairness metrics need binary labels 0/1 (1 = positive class); {name} holds {unexpected[:5]}"
        )
    return array.astype(int)


def _disparities(
    table: pd.DataFrame,
) -> tuple[float | None, float | None, float | None]:
    rates = table["selection_rate"]
    difference = float(rates.max() - rates.min())
    ratio = float(rates.min() / rates.max()) if rates.max() > 0 else 1.0
    gaps = [
        float(table[col].max() - table[col].min())
        for col in ("true_positive_rate", "false_positive_rate")
        if table[col].notna().sum() >= 2
    ]
    return difference, ratio, (max(gaps) if gaps else None)


def _check(
    item: AttributeFairness, thresholds: FairnessThresholds
) -> tuple[Literal["pass", "fail"], list[str]]:
    failures = []
    dpd, dpr, eod = (
        item.demographic_parity_difference,
        item.demographic_parity_ratio,
        item.equalized_odds_difference,
    )
    limit = thresholds.demographic_parity_difference_max
    if limit is not None and dpd is not None and dpd > limit:
        failures.append(f"{item.attribute}: demographic parity difference {dpd:.3f} > {limit}")
    floor = thresholds.demographic_parity_ratio_min
    if floor is not None and dpr is not None and dpr < floor:
        failures.append(f"{item.attribute}: demographic parity ratio {dpr:.3f} < {floor}")
    limit = thresholds.equalized_odds_difference_max
    if limit is not None and eod is not None and eod > limit:
        failures.append(f"{item.attribute}: equalized odds difference {eod:.3f} > {limit}")
    return ("fail" if failures else "pass"), failures


GroupTables = Callable[[np.ndarray, np.ndarray, list[pd.DataFrame]], list[pd.DataFrame]]
"""Per-group tables for several groupings of the same rows, one table per grouping.

A table has the columns ``selection_rate``, ``accuracy``, ``true_positive_rate``,
``false_positive_rate`` and ``count``, one row per non-empty group in MetricFrame's order,
indexed by the group label (intersections joined with ``" x "``). :func:`metric_frame_tables`
computes them in process; ``govml.compute.distributed_eval`` sums counts in Ray tasks.
"""


def group_table(y_true: np.ndarray, y_pred: np.ndarray, groups: pd.DataFrame) -> pd.DataFrame:
    """MetricFrame's per-group metrics and the group sizes over the columns of ``groups``."""
    columns = list(groups.columns)
    frame = MetricFrame(
        metrics=_GROUP_METRICS,
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups if len(columns) > 1 else groups[columns[0]],
    )
    # Group sizes come from pandas: one more MetricFrame metric costs a pass over every row.
    counts = groups.groupby(columns if len(columns) > 1 else columns[0], observed=True).size()
    table = frame.by_group.assign(count=counts.reindex(frame.by_group.index).fillna(0))
    table = table[table["count"] > 0]
    if len(columns) > 1:
        table.index = [INTERSECTION_SEPARATOR.join(map(str, key)) for key in table.index]
    else:
        table.index = [str(key) for key in table.index]
    return table


def metric_frame_tables(y_true: np.ndarray, y_pred: np.ndarray, groupings: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The in-process :data:`GroupTables`: one MetricFrame per grouping."""
    return [group_table(y_true, y_pred, groups) for groups in groupings]


def assess_attribute(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: pd.DataFrame,
    thresholds: FairnessThresholds,
    *,
    binned: str | None = None,
) -> AttributeFairness:
    """MetricFrame over the columns of ``groups`` (labels already made by :func:`group_labels`)."""
    return attribute_from_table(group_table(y_true, y_pred, groups), list(groups.columns), thresholds, binned=binned)


def attribute_from_table(
    table: pd.DataFrame, columns: list[str], thresholds: FairnessThresholds, *, binned: str | None = None
) -> AttributeFairness:
    """Small-group flags, disparities and the verdict from one :data:`GroupTables` table."""
    name = INTERSECTION_SEPARATOR.join(columns)
    small = table["count"] < thresholds.min_group_size
    group_rows = [
        GroupMetrics(
            group=label,
            count=int(row["count"]),
            selection_rate=float(row["selection_rate"]),
            accuracy=float(row["accuracy"]),
            true_positive_rate=_finite(row["true_positive_rate"]),
            false_positive_rate=_finite(row["false_positive_rate"]),
            small=bool(small[label]),
        )
        for label, row in table.iterrows()
    ]
    excluded = [label for label in table.index if small[label]]
    notes = []
    if excluded:
        notes.append(
            f"{len(excluded)} group(s) with fewer than {thresholds.min_group_size} rows left out of "
            f"the disparities: {', '.join(excluded)}"
        )
    eligible = table[~small]
    if len(eligible) < 2:
        notes.append(
            f"fewer than two groups have at least {thresholds.min_group_size} rows: "
            "disparities cannot be assessed"
        )
        return AttributeFairness(
            attribute=name,
            columns=columns,
            intersection=len(columns) > 1,
            binned=binned,
            groups=group_rows,
            excluded_groups=excluded,
            demographic_parity_difference=None,
            demographic_parity_ratio=None,
            equalized_odds_difference=None,
            status="not_assessable",
            notes=notes,
        )
    dpd, dpr, eod = _disparities(eligible)
    item = AttributeFairness(
        attribute=name,
        columns=columns,
        intersection=len(columns) > 1,
        binned=binned,
        groups=group_rows,
        excluded_groups=excluded,
        demographic_parity_difference=dpd,
        demographic_parity_ratio=dpr,
        equalized_odds_difference=eod,
        status="pass",
        notes=notes,
    )
    status, failures = _check(item, thresholds)
    return item.model_copy(update={"status": status, "failures": failures})


def demographic_parity_difference(
    y_pred: np.ndarray, sensitive: pd.Series, *, min_group_size: int = 30
) -> float | None:
    """Largest minus smallest selection rate among groups of at least ``min_group_size`` rows."""
    labels, _ = group_labels(sensitive.reset_index(drop=True))
    rates = pd.Series(np.asarray(y_pred) == 1).groupby(labels).agg(["mean", "size"])
    rates = rates[rates["size"] >= min_group_size]
    return float(rates["mean"].max() - rates["mean"].min()) if len(rates) >= 2 else None


def _binned(columns: list[str], binning: dict[str, str | None]) -> str | None:
    if len(columns) == 1:
        return binning[columns[0]]
    return "; ".join(f"{c}: {binning[c]}" for c in columns if binning[c]) or None


def assess_fairness(
    y_true: Sequence[int] | np.ndarray | pd.Series,
    y_pred: Sequence[int] | np.ndarray | pd.Series,
    sensitive: pd.DataFrame,
    *,
    min_group_size: int = 30,
    dp_difference_max: float | None = 0.1,
    dp_ratio_min: float | None = 0.8,
    eo_difference_max: float | None = None,
    intersections: bool = True,
    gate_on_intersections: bool = False,
    group_tables: GroupTables = metric_frame_tables,
) -> FairnessReport:
    """Per-group metrics and disparities for each sensitive column and each pair of them.

    ``y_true`` and ``y_pred`` are 0/1 labels (1 = positive class); ``sensitive`` holds the
    sensitive columns, row-aligned with them. The report passes when every single
    attribute that can be assessed meets the thresholds (intersections too when
    ``gate_on_intersections``); intersections are always reported. ``group_tables``
    computes the per-group tables: in process by default, or split across workers.
    """
    if not isinstance(sensitive, pd.DataFrame) or sensitive.shape[1] == 0:
        raise DataError("assess_fairness needs a DataFrame with at least one sensitive column")
    n_rows = len(sensitive)
    if n_rows == 0:
        raise DataError("assess_fairness got no rows")
    truth = _as_labels(y_true, "y_true", n_rows)
    pred = _as_labels(y_pred, "y_pred", n_rows)
    thresholds = FairnessThresholds(
        demographic_parity_difference_max=dp_difference_max,
        demographic_parity_ratio_min=dp_ratio_min,
        equalized_odds_difference_max=eo_difference_max,
        min_group_size=min_group_size,
    )
    labelled: dict[str, pd.Series] = {}
    binning: dict[str, str | None] = {}
    for column in sensitive.columns:
        labelled[column], binning[column] = group_labels(sensitive[column].reset_index(drop=True))

    groupings = [[c] for c in sensitive.columns]
    if intersections:
        groupings += [list(pair) for pair in itertools.combinations(sensitive.columns, 2)]
    tables = group_tables(truth, pred, [pd.DataFrame({c: labelled[c] for c in cols}) for cols in groupings])
    attributes = [
        attribute_from_table(table, cols, thresholds, binned=_binned(cols, binning))
        for table, cols in zip(tables, groupings, strict=True)
    ]

    gating = [a for a in attributes if gate_on_intersections or not a.intersection]
    failures = [f for a in gating for f in a.failures]
    notes = [
        f"{a.attribute}: not assessable (too few rows per group)"
        for a in gating
        if a.status == "not_assessable"
    ]
    if intersections and not gate_on_intersections and len(sensitive.columns) > 1:
        notes.append("intersections are reported but do not gate")
    return FairnessReport(
        n_rows=n_rows,
        overall_selection_rate=selection_rate(truth, pred),
        overall_accuracy=accuracy(truth, pred),
        thresholds=thresholds,
        attributes=attributes,
        gate_on_intersections=gate_on_intersections,
        passed=not failures,
        failures=failures,
        notes=notes,
    )


def plot_selection_rates(report: FairnessReport, path: Path) -> Path:
    """Save a PNG with one horizontal bar chart of selection rate per group and attribute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = report.attributes
    heights = [max(1.5, 0.3 * len(a.groups) + 0.8) for a in items]
    fig, axes = plt.subplots(len(items), 1, figsize=(7, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, item in zip(axes[:, 0], items, strict=True):
        labels = [g.group + (" (small)" if g.small else "") for g in item.groups]
        colours = ["#bbbbbb" if g.small else "#3b75af" for g in item.groups]
        ax.barh(labels, [g.selection_rate for g in item.groups], color=colours)
        ax.axvline(report.overall_selection_rate, color="black", linestyle="--", linewidth=1)
        dpd = item.demographic_parity_difference
        title = f"{item.attribute}: " + (
            f"DP difference {dpd:.3f}, ratio {item.demographic_parity_ratio:.2f} ({item.status})"
            if dpd is not None and item.demographic_parity_ratio is not None
            else item.status
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("selection rate (dashed: overall; grey: small group, not scored)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
