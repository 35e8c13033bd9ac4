"""Input validation: small batches are checked value by value, and accept exactly what the vectorised path accepts."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pytest

from govml.serving.loading import LoadedModel
from govml.serving.payload import RawBatch, RequestError
from govml.serving.validation import InputValidator

if TYPE_CHECKING:
    from conftest import AdultData


def _outcome(validator: InputValidator, batch: RawBatch, *, small: bool) -> Any:
    """The arrays (or the 422 message) of one path: ``small`` lets validate use the value-by-value path."""
    rules = validator._scalar_rules
    if not small:
        validator._scalar_rules = None  # force the vectorised path
    try:
        validated = validator.validate(batch)
    except RequestError as exc:
        return ("error", exc.status, exc.message)
    finally:
        validator._scalar_rules = rules
    return {name: (array.dtype, array.tolist()) for name, array in validated.columns.items()}, validated.kinds


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


BAD_VALUES = [
    None, math.nan, math.inf, -math.inf, "forty", "", True, False, 39.5, 2**60, -(2**70), [1], {"a": 1}, 0, 1e308
]


def test_small_batches_accept_and_refuse_exactly_as_the_vectorised_path(loaded: LoadedModel, adult: AdultData) -> None:
    validator = InputValidator.from_model(loaded.signature, loaded.schema_json)
    assert validator._scalar_rules is not None  # the constraints (>=, <=, isin) have scalar forms
    rows = adult.test_X.head(3).astype(object).where(adult.test_X.head(3).notna(), None)
    base = {name: rows[name].tolist() for name in validator.input_names}
    cases = [RawBatch(columns=dict(base), n_rows=3)]
    for name in validator.input_names:
        for value in BAD_VALUES + ["Male", "Atlantis", 17, 16, 100, 101, 99.0, 0.5]:
            columns = dict(base)
            columns[name] = [columns[name][0], value, columns[name][2]]
            cases.append(RawBatch(columns=columns, n_rows=3))
        cases.append(RawBatch(columns={k: v for k, v in base.items() if k != name}, n_rows=3))  # missing column
    accepted = 0
    for batch in cases:
        small, vectorised = _outcome(validator, batch, small=True), _outcome(validator, batch, small=False)
        assert _same(small, vectorised), (batch.columns, small, vectorised)
        accepted += not isinstance(small, tuple) or small[0] != "error"
    assert 0 < accepted < len(cases)


def test_one_bad_value_is_named_with_column_and_row(loaded: LoadedModel) -> None:
    validator = InputValidator.from_model(loaded.signature, loaded.schema_json)
    columns: dict[str, list[Any]] = {name: [None] for name in validator.input_names}
    columns.update(age=[150], sex=["Male"], hours_per_week=[40], education_num=[9])
    with pytest.raises(RequestError) as refused:
        validator.validate(RawBatch(columns=columns, n_rows=1))
    assert refused.value.status == 422
    assert any(e.column == "age" and e.row == 0 for e in refused.value.errors)
