"""Check request columns against the model's signature and stored pandera schema, vectorised.

The pandera schema (``govml/schema.json``) is parsed by pandera itself; its dtypes,
nullability and common checks (ranges, allowed values, string patterns) are compiled
to numpy so a one-row request is validated in microseconds. Checks without a compiled
form run through pandera's own ``Check`` on a Series. Columns the schema holds but the
model does not take (the target, say) are ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from pandas.api.types import infer_dtype

from govml.serving.payload import FieldError, RawBatch, RequestError

Kind = Literal["integer", "float", "string", "boolean", "any"]
MAX_LISTED_ERRORS = 20
SMALL_BATCH_ROWS = 32  # up to this many rows, valid input is checked value by value (see _validate_small)
_EXACT_INT = 2**53  # integers below this are exact in float64, so numpy and Python compare them alike
_NUMBER_TYPES = (int, float)
_NUMERIC_INFERRED = ("integer", "floating", "mixed-integer-float", "empty")


@dataclass(frozen=True)
class ValueCheck:
    """A vectorised check: returns a mask of failing entries among the present values.

    ``accepts`` is the same rule for one plain value (a str, or a number as a Python float), for
    small batches; None when the check has no exact scalar form.
    """

    name: str
    describe: str
    failing: Callable[[np.ndarray], np.ndarray]
    accepts: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class ColumnRule:
    name: str
    kind: Kind
    nullable: bool
    required: bool = True
    checks: tuple[ValueCheck, ...] = ()


@dataclass
class ValidatedBatch:
    """Typed columns in the model's input order: float64 for numbers, object otherwise; NaN = missing."""

    columns: dict[str, np.ndarray]
    kinds: dict[str, Kind]
    n_rows: int
    extras: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """The frame the sklearn model would receive; integer columns without nulls stay int64."""
        data: dict[str, Any] = {}
        for name, values in self.columns.items():
            kind = self.kinds[name]
            if kind == "integer" and not np.isnan(values).any():
                data[name] = values.astype(np.int64)
            else:
                data[name] = values
        return pd.DataFrame(data, index=pd.RangeIndex(self.n_rows))

    @classmethod
    def concat(cls, batches: Sequence[ValidatedBatch]) -> ValidatedBatch:
        """The rows of ``batches`` (validated by one validator, so with the same columns) in order."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        columns = {name: np.concatenate([b.columns[name] for b in batches]) for name in first.columns}
        return cls(columns=columns, kinds=first.kinds, n_rows=sum(b.n_rows for b in batches))

    def json_rows(self) -> list[str]:
        """One JSON object per row (missing values as null), encoded by pandas in C; integers stay integers."""
        data: dict[str, Any] = {}
        for name, values in self.columns.items():
            data[name] = values
            if self.kinds[name] == "integer" and np.nanmax(np.abs(values), initial=0.0) < 2**53:
                data[name] = pd.array(values, dtype="Int64")  # NaN becomes null, the rest print as integers
        frame = pd.DataFrame(data, index=pd.RangeIndex(self.n_rows))
        return frame.to_json(orient="records", lines=True, double_precision=15).splitlines()

    def rows(self) -> list[dict[str, Any]]:
        """JSON-ready rows (NaN as None), for the prediction log."""
        out: list[dict[str, Any]] = [{} for _ in range(self.n_rows)]
        for name, values in self.columns.items():
            items = values.tolist()
            for i, v in enumerate(items):
                out[i][name] = None if isinstance(v, float) and math.isnan(v) else v
        return out


def _kind_from_pandera(dtype: str) -> Kind:
    text = dtype.lower()
    if "int" in text:
        return "integer"
    if "float" in text or "double" in text:
        return "float"
    if "bool" in text:
        return "boolean"
    if "str" in text or "object" in text or "category" in text:
        return "string"
    return "any"


_MLFLOW_KINDS: dict[str, Kind] = {
    "long": "integer", "integer": "integer", "double": "float", "float": "float",
    "string": "string", "boolean": "boolean",
}  # fmt: skip


def _kind_from_mlflow(type_name: str) -> Kind:
    return _MLFLOW_KINDS.get(type_name, "any")


def _compile_check(check: Any) -> ValueCheck:
    """A pandera Check as a numpy predicate; unknown checks run through pandera on a Series."""
    name = str(check.name)
    s = dict(check.statistics or {})
    simple: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {}
    if "min_value" in s and name == "greater_than_or_equal_to":
        simple[name] = (f">= {s['min_value']}", lambda v: ~(v >= s["min_value"]))
    elif "min_value" in s and name == "greater_than":
        simple[name] = (f"> {s['min_value']}", lambda v: ~(v > s["min_value"]))
    elif "max_value" in s and name == "less_than_or_equal_to":
        simple[name] = (f"<= {s['max_value']}", lambda v: ~(v <= s["max_value"]))
    elif "max_value" in s and name == "less_than":
        simple[name] = (f"< {s['max_value']}", lambda v: ~(v < s["max_value"]))
    elif name == "in_range":
        lo, hi = s["min_value"], s["max_value"]
        inc_lo, inc_hi = s.get("include_min", True), s.get("include_max", True)
        simple[name] = (
            f"in {'[' if inc_lo else '('}{lo}, {hi}{']' if inc_hi else ')'}",
            lambda v: ~(((v >= lo) if inc_lo else (v > lo)) & ((v <= hi) if inc_hi else (v < hi))),
        )
    elif name == "isin":
        allowed = list(s["allowed_values"])
        simple[name] = (f"one of {allowed}", lambda v: ~np.isin(v, np.array(allowed, dtype=object)))
    elif name == "notin":
        forbidden = list(s["forbidden_values"])
        simple[name] = (f"not one of {forbidden}", lambda v: np.isin(v, np.array(forbidden, dtype=object)))
    elif name == "equal_to":
        simple[name] = (f"== {s['value']}", lambda v: ~(v == s["value"]))
    elif name == "not_equal_to":
        simple[name] = (f"!= {s['value']}", lambda v: v == s["value"])
    elif name == "str_matches":
        pattern = re.compile(str(s["pattern"]))
        simple[name] = (
            f"matching {pattern.pattern!r}",
            lambda v: np.array([pattern.match(str(x)) is None for x in v], dtype=bool),
        )
    if name in simple:
        describe, failing = simple[name]
        return ValueCheck(name=name, describe=describe, failing=failing, accepts=_scalar_check(name, s))

    def run_pandera(values: np.ndarray) -> np.ndarray:
        result = check(pd.Series(values))
        output = result.check_output
        return ~np.asarray(output, dtype=bool).reshape(-1)[: len(values)]

    return ValueCheck(name=name, describe=f"passing pandera check {name}", failing=run_pandera)


def _plain(value: Any) -> bool:
    """A statistic that numpy and Python compare alike: text, or a number exact in float64."""
    if isinstance(value, str):
        return True
    return type(value) in (int, float) and math.isfinite(value) and abs(value) < _EXACT_INT


def _scalar_check(name: str, s: dict[str, Any]) -> Callable[[Any], bool] | None:
    """The scalar form of a compiled check (see :class:`ValueCheck`), when its statistics are plain."""
    if name in ("greater_than_or_equal_to", "greater_than") and _plain(s["min_value"]):
        lo = s["min_value"]
        return (lambda x: x >= lo) if name == "greater_than_or_equal_to" else (lambda x: x > lo)
    if name in ("less_than_or_equal_to", "less_than") and _plain(s["max_value"]):
        hi = s["max_value"]
        return (lambda x: x <= hi) if name == "less_than_or_equal_to" else (lambda x: x < hi)
    if name == "in_range" and _plain(s["min_value"]) and _plain(s["max_value"]):
        lo, hi = s["min_value"], s["max_value"]
        inc_lo, inc_hi = s.get("include_min", True), s.get("include_max", True)
        return lambda x: ((x >= lo) if inc_lo else (x > lo)) and ((x <= hi) if inc_hi else (x < hi))
    if name in ("isin", "notin"):
        values = list(s["allowed_values" if name == "isin" else "forbidden_values"])
        if not (all(isinstance(v, str) for v in values) or all(_plain(v) and not isinstance(v, str) for v in values)):
            return None
        members = frozenset(values)
        return (lambda x: x in members) if name == "isin" else (lambda x: x not in members)
    if name in ("equal_to", "not_equal_to") and _plain(s["value"]):
        value = s["value"]
        return (lambda x: x == value) if name == "equal_to" else (lambda x: x != value)
    if name == "str_matches":
        pattern = re.compile(str(s["pattern"]))
        return lambda x: pattern.match(str(x)) is not None
    return None


@dataclass(frozen=True)
class _ScalarRule:
    name: str
    numeric: bool
    integer: bool
    nullable: bool
    required: bool
    accepts: tuple[Callable[[Any], bool], ...]


class InputValidator:
    """Validates a :class:`RawBatch` into a :class:`ValidatedBatch` or raises :class:`RequestError` (422)."""

    def __init__(self, rules: list[ColumnRule], *, source: str) -> None:
        self.rules = rules
        self.source = source
        self.input_names = [r.name for r in rules]
        self._kinds: dict[str, Kind] = {r.name: r.kind for r in rules}
        self._scalar_rules = _scalar_rules(rules)

    @classmethod
    def from_model(
        cls,
        signature: ModelSignature | None,
        schema_json: str | None,
        *,
        fallback_columns: list[str] | None = None,
    ) -> InputValidator:
        """Rules from the signature's column specs, tightened by the pandera schema when present."""
        specs: list[tuple[str, Kind, bool]] = []
        if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
            for spec in signature.inputs.inputs:
                type_name = getattr(getattr(spec, "type", None), "name", str(getattr(spec, "type", "")))
                specs.append((str(spec.name), _kind_from_mlflow(str(type_name)), bool(getattr(spec, "required", True))))
        elif fallback_columns:
            specs = [(name, "any", True) for name in fallback_columns]
        if not specs:
            raise RequestError("the model has no column-based signature to validate against", status=500)
        columns = {}
        if schema_json:
            import pandera.pandas as pa

            columns = pa.DataFrameSchema.from_json(schema_json).columns
        rules = []
        for name, kind, required in specs:
            column = columns.get(name)
            if column is None:
                rules.append(ColumnRule(name=name, kind=kind, nullable=True, required=required))
                continue
            schema_kind = _kind_from_pandera(str(column.dtype))
            rules.append(
                ColumnRule(
                    name=name,
                    kind=schema_kind if schema_kind != "any" else kind,
                    nullable=bool(column.nullable),
                    required=required,
                    checks=tuple(_compile_check(c) for c in column.checks),
                )
            )
        return cls(rules, source="signature and schema" if schema_json else "signature")

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r.name, "kind": r.kind, "nullable": r.nullable, "required": r.required,
                "checks": [c.describe for c in r.checks],
            }
            for r in self.rules
        ]

    def validate(self, batch: RawBatch, *, enforce: bool = True) -> ValidatedBatch:
        """Typed columns; with ``enforce=False`` only types are checked (nulls and schema checks are not)."""
        if enforce and batch.n_rows <= SMALL_BATCH_ROWS and self._scalar_rules is not None:
            validated = self._validate_small(batch, self._scalar_rules)
            if validated is not None:
                return validated
        errors: list[FieldError] = []
        missing = [r.name for r in self.rules if r.required and r.name not in batch.columns]
        for name in missing:
            errors.append(FieldError(name, None, "required column is missing"))
        if missing:
            raise RequestError(
                f"missing required column(s) {missing}; the model takes {self.input_names}",
                status=422, errors=errors,
            )
        out: dict[str, np.ndarray] = {}
        kinds: dict[str, Kind] = {}
        for rule in self.rules:
            values = batch.columns.get(rule.name)
            if values is None:
                values = [None] * batch.n_rows
            array = _convert(rule, values, errors)
            if array is None:
                continue
            out[rule.name] = array
            kinds[rule.name] = rule.kind if rule.kind != "any" or array.dtype == object else "float"
            if not enforce:
                continue
            present = _present_mask(array)
            if not rule.nullable and not present.all():
                for row in np.flatnonzero(~present)[:MAX_LISTED_ERRORS]:
                    errors.append(FieldError(rule.name, int(row), "null where the schema allows none"))
            if rule.checks and present.any():
                rows = np.flatnonzero(present)
                kept = array[rows]
                for check in rule.checks:
                    bad = rows[np.asarray(check.failing(kept), dtype=bool)]
                    for row in bad[:MAX_LISTED_ERRORS]:
                        message = f"value {array[row]!r} is not {check.describe} ({check.name})"
                        errors.append(FieldError(rule.name, int(row), message))
        if errors:
            first = errors[0]
            where = f"column {first.column!r}" + (f" row {first.row}" if first.row is not None else "")
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise RequestError(f"{where}: {first.message}{more}", status=422, errors=errors[: MAX_LISTED_ERRORS * 2])
        return ValidatedBatch(columns=out, kinds=kinds, n_rows=batch.n_rows, extras=batch.extras)


    def _validate_small(self, batch: RawBatch, rules: list[_ScalarRule]) -> ValidatedBatch | None:
        """A few rows checked value by value in plain Python (no numpy call per column and check).

        It accepts only input the vectorised path accepts, and builds the same arrays; on anything
        else (a bad value, a bool, an integer too large for float64 to hold exactly) it returns
        None and the vectorised path validates the batch and words the errors.
        """
        n = batch.n_rows
        out: dict[str, np.ndarray] = {}
        for rule in rules:
            values = batch.columns.get(rule.name)
            if values is None:
                if rule.required:
                    return None
                values = [None] * n
            if rule.numeric:
                for v in values:
                    kind = v.__class__
                    if kind is int:
                        if not -_EXACT_INT < v < _EXACT_INT:
                            return None
                        v = float(v)
                    elif kind is float:
                        if v != v:  # NaN counts as missing, as in the vectorised path
                            if not rule.nullable:
                                return None
                            continue
                        if not math.isfinite(v) or (rule.integer and not v.is_integer()):
                            return None
                    elif v is None:
                        if not rule.nullable:
                            return None
                        continue
                    else:
                        return None
                    for accepts in rule.accepts:
                        if not accepts(v):
                            return None
                out[rule.name] = np.array(values, dtype=np.float64)  # None becomes NaN
            else:
                missing = False
                for v in values:
                    if v.__class__ is str:
                        for accepts in rule.accepts:
                            if not accepts(v):
                                return None
                    elif v is None and rule.nullable:
                        missing = True
                    else:
                        return None
                array = np.empty(n, dtype=object)
                array[:] = [math.nan if v is None else v for v in values] if missing else values
                out[rule.name] = array
        return ValidatedBatch(columns=out, kinds=self._kinds, n_rows=n, extras=batch.extras)


def _scalar_rules(rules: list[ColumnRule]) -> list[_ScalarRule] | None:
    """The rules for :meth:`InputValidator._validate_small`; None when one of them has no scalar form."""
    out = []
    for rule in rules:
        accepts = tuple(c.accepts for c in rule.checks)
        if rule.kind not in ("integer", "float", "string") or any(a is None for a in accepts):
            return None
        out.append(
            _ScalarRule(
                name=rule.name, numeric=rule.kind != "string", integer=rule.kind == "integer",
                nullable=rule.nullable, required=rule.required, accepts=accepts,  # type: ignore[arg-type]
            )
        )
    return out


def frame_to_batch(frame: pd.DataFrame) -> RawBatch:
    """A DataFrame as JSON-like columns (missing values as None), as a request would carry it."""
    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        series = frame[name]
        values = series.astype(object).where(series.notna(), None).tolist()
        columns[str(name)] = [v.item() if isinstance(v, np.generic) else v for v in values]
    return RawBatch(columns=columns, n_rows=len(frame))


def _present_mask(array: np.ndarray) -> np.ndarray:
    if array.dtype == object:
        return ~pd.isna(array)
    return ~np.isnan(array)


def _type_error(
    rule: ColumnRule, values: list[Any], bad_rows: list[int], expected: str, errors: list[FieldError]
) -> None:
    for row in bad_rows[:MAX_LISTED_ERRORS]:
        errors.append(
            FieldError(rule.name, row, f"expected {expected}, got {values[row]!r} ({type(values[row]).__name__})")
        )


def _convert(rule: ColumnRule, values: list[Any], errors: list[FieldError]) -> np.ndarray | None:
    """Typed array of ``values`` for ``rule.kind``; appends type errors and returns None on failure."""
    inferred = infer_dtype(values, skipna=True)  # one C pass; the loops below run only on bad input
    if rule.kind in ("integer", "float"):
        if inferred not in _NUMERIC_INFERRED:
            bad = [
                i for i, v in enumerate(values)
                if v is not None and (not isinstance(v, _NUMBER_TYPES) or isinstance(v, bool))
            ]
            if bad:
                _type_error(rule, values, bad, "a number", errors)
                return None
        try:
            array = np.array(values, dtype=np.float64)  # None becomes NaN
        except OverflowError:
            _type_error(rule, values, [i for i, v in enumerate(values) if isinstance(v, int) and abs(v) > 2**1023],
                        "a finite number", errors)
            return None
        finite = np.isfinite(array) | np.isnan(array)
        if not finite.all():
            _type_error(rule, values, np.flatnonzero(~finite).tolist(), "a finite number", errors)
            return None
        if rule.kind == "integer":
            present = ~np.isnan(array)
            fractional = np.flatnonzero(present & (np.mod(np.where(present, array, 0.0), 1.0) != 0))
            if fractional.size:
                _type_error(rule, values, fractional.tolist(), "an integer", errors)
                return None
        return array
    if rule.kind == "any" and inferred in _NUMERIC_INFERRED and inferred != "empty":
        return _convert(ColumnRule(rule.name, "float", rule.nullable), values, errors)
    if rule.kind == "string":
        expected: tuple[type, ...] = (str,)
        label = "a string"
    elif rule.kind == "boolean":
        expected, label = (bool,), "true or false"
    else:
        expected, label = (str, int, float, bool), "a scalar"
    fine = {"string": ("string", "empty"), "boolean": ("boolean", "empty")}.get(rule.kind)
    if fine is None or inferred not in fine:
        bad = [i for i, v in enumerate(values) if not _is_missing(v) and not isinstance(v, expected)]
        if bad:
            _type_error(rule, values, bad, label, errors)
            return None
    # Missing text is NaN, as pandas holds it in the training frames the pipeline was fitted on
    # (a None would slip past SimpleImputer's default missing_values=np.nan).
    array = np.empty(len(values), dtype=object)
    array[:] = values
    array[pd.isna(array)] = math.nan
    return array


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
