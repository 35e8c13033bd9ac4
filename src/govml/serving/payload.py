"""Request bodies to columns: MLflow's scoring protocol and the Open Inference Protocol v2.

Both protocols become a :class:`RawBatch` (column name -> list of JSON values), which
:mod:`govml.serving.validation` then checks against the model's signature and schema.
Anything malformed raises :class:`RequestError`, which the app turns into a 4xx.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
V2_DATATYPES = {
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
}


@dataclass(frozen=True)
class FieldError:
    """One bad value (or a bad column when ``row`` is None)."""

    column: str | None
    row: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"column": self.column, "row": self.row, "message": self.message}


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and the failing columns and rows."""

    def __init__(self, message: str, *, status: int = 400, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        code = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(
            self.status, "INVALID_PARAMETER_VALUE"
        )
        return {"error_code": code, "message": self.message, "errors": [e.as_dict() for e in self.errors]}


@dataclass
class RawBatch:
    """Columns of JSON values, all of one length."""

    columns: dict[str, list[Any]]
    n_rows: int
    extras: dict[str, Any] = field(default_factory=dict)


def _records(records: list[Any], key: str) -> RawBatch:
    if not all(isinstance(r, dict) for r in records):
        bad = next(i for i, r in enumerate(records) if not isinstance(r, dict))
        raise RequestError(f"{key}: row {bad} is not a JSON object", errors=[FieldError(None, bad, "not an object")])
    names: dict[str, None] = {}
    for record in records:
        for name in record:
            names.setdefault(name, None)
    columns = {name: [r.get(name) for r in records] for name in names}
    return RawBatch(columns=columns, n_rows=len(records))


def _rows(rows: list[Any], names: list[str], key: str) -> RawBatch:
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise RequestError(f"{key}: row {i} is not a list", errors=[FieldError(None, i, "not a list")])
        if len(row) != len(names):
            raise RequestError(
                f"{key}: row {i} has {len(row)} values for {len(names)} columns {names}",
                errors=[FieldError(None, i, f"expected {len(names)} values, got {len(row)}")],
            )
    columns = {name: [row[j] for row in rows] for j, name in enumerate(names)}
    return RawBatch(columns=columns, n_rows=len(rows))


def _column_dict(data: dict[str, Any], key: str) -> RawBatch:
    if not data:
        raise RequestError(f"{key}: no columns")
    if all(not isinstance(v, list) for v in data.values()):
        return RawBatch(columns={k: [v] for k, v in data.items()}, n_rows=1)  # one row as scalars
    lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in data.items()}
    if len(set(lengths.values())) != 1 or -1 in lengths.values():
        raise RequestError(
            f"{key}: every column must be a list of the same length; got lengths {lengths}",
            errors=[FieldError(k, None, f"length {n}") for k, n in lengths.items()],
        )
    return RawBatch(columns={str(k): list(v) for k, v in data.items()}, n_rows=next(iter(lengths.values())))


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"the body is not valid UTF-8 JSON: {exc}") from None


def parse_invocation(body: bytes, content_type: str | None, input_names: list[str]) -> RawBatch:
    """Parse an MLflow ``/invocations`` body (JSON in one of the four formats, or CSV)."""
    mime = (content_type or "application/json").split(";")[0].strip().lower()
    if mime == "text/csv":
        return _parse_csv(body)
    if mime != "application/json":
        raise RequestError(
            f"unsupported content type {content_type!r}: use application/json or text/csv", status=415
        )
    payload = _parse_json(body)
    if not isinstance(payload, dict):
        raise RequestError(f"the body must be a JSON object with exactly one of {list(MLFLOW_FORMATS)}")
    keys = [k for k in payload if k in MLFLOW_FORMATS]
    unknown = [k for k in payload if k not in MLFLOW_FORMATS and k != "params"]
    if len(keys) != 1 or unknown:
        raise RequestError(
            f"the body must hold exactly one of {list(MLFLOW_FORMATS)} (and optionally 'params'); "
            f"got keys {list(payload)}"
        )
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        batch = _dataframe_split(data, input_names)
    elif key == "dataframe_records":
        if not isinstance(data, list):
            raise RequestError("dataframe_records must be a list of row objects")
        batch = _records(data, key)
    elif isinstance(data, dict):
        batch = _column_dict(data, key)
    elif isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        batch = _records(data, key)
    elif isinstance(data, list) and data and all(isinstance(r, list) for r in data):
        batch = _rows(data, input_names, key)
    else:
        raise RequestError(f"{key} must be a list of row objects, a list of rows, or an object of columns")
    if batch.n_rows == 0:
        raise RequestError(f"{key} holds no rows")
    if isinstance(payload.get("params"), dict):
        batch.extras["params"] = payload["params"]
    return batch


def _dataframe_split(data: Any, input_names: list[str]) -> RawBatch:
    if not isinstance(data, dict) or "data" not in data or set(data) - {"columns", "data", "index"}:
        raise RequestError("dataframe_split must be an object with 'data' and optionally 'columns' and 'index'")
    rows = data["data"]
    if not isinstance(rows, list):
        raise RequestError("dataframe_split.data must be a list of rows")
    names = data.get("columns", input_names)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RequestError("dataframe_split.columns must be a list of column names")
    if len(set(names)) != len(names):
        raise RequestError(f"dataframe_split.columns repeats a name: {names}")
    return _rows(rows, names, "dataframe_split")


def _parse_csv(body: bytes) -> RawBatch:
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=object, keep_default_na=True)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise RequestError(f"the CSV body cannot be read: {exc}") from None
    if frame.empty:
        raise RequestError("the CSV body holds no rows")
    columns = {
        str(c): [_csv_value(v) for v in frame[c].tolist()] for c in frame.columns
    }
    return RawBatch(columns=columns, n_rows=len(frame))


def _csv_value(value: Any) -> Any:
    """CSV cells arrive as text; numbers are parsed back so numeric columns validate."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


# --- Open Inference Protocol v2 --------------------------------------------------------


@dataclass(frozen=True)
class V2Request:
    batch: RawBatch
    request_id: str | None
    outputs: list[str] | None


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if all(not isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item))
    return flat


def _matrix_tensor(tensor: dict[str, Any], input_names: list[str]) -> RawBatch | None:
    """The spec's other layout: one ``[rows, features]`` tensor whose features are the
    model's input columns in signature order. None when ``tensor`` is a column tensor."""
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and shape[1] != 1 and tensor.get("name") not in input_names):
        return None
    name, datatype = str(tensor.get("name")), tensor.get("datatype")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(f"inputs[0] ({name}): shape must hold non-negative integers; got {shape}")
    rows, width = shape
    if width != len(input_names):
        raise RequestError(
            f"inputs[0] ({name}): a [rows, features] tensor needs {len(input_names)} features, one per input "
            f"column in this order: {input_names}; got {width}",
            errors=[FieldError(name, None, f"shape {shape}")],
        )
    if datatype not in V2_DATATYPES:
        raise RequestError(f"inputs[0] ({name}): datatype {datatype!r} is not one of {sorted(V2_DATATYPES)}")
    values = _flatten(tensor.get("data"))  # row-major, nested or flat, as the spec allows
    if len(values) != rows * width:
        raise RequestError(
            f"inputs[0] ({name}): shape {shape} says {rows * width} values but data holds {len(values)}",
            errors=[FieldError(name, None, "data does not match shape")],
        )
    columns = {column: values[j::width] for j, column in enumerate(input_names)}
    for column, column_values in columns.items():
        _check_datatype(column, datatype, column_values)
    if not rows:
        raise RequestError("the inputs hold no rows")
    return RawBatch(columns=columns, n_rows=rows)


def parse_v2_infer(body: bytes, input_names: list[str] | None = None) -> V2Request:
    """Parse a v2 ``infer`` body: one named tensor per column, or a single
    ``[rows, features]`` tensor with the columns in the order of ``input_names``."""
    payload = _parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise RequestError("a v2 inference request is an object with a non-empty 'inputs' list")
    request_id = payload.get("id") if isinstance(payload.get("id"), str) else None
    outputs = payload.get("outputs")
    names: list[str] | None = None
    if isinstance(outputs, list):
        names = [o["name"] for o in outputs if isinstance(o, dict) and isinstance(o.get("name"), str)]
    first = payload["inputs"][0]
    if input_names and len(payload["inputs"]) == 1 and isinstance(first, dict):
        matrix = _matrix_tensor(first, input_names)
        if matrix is not None:
            return V2Request(batch=matrix, request_id=request_id, outputs=names)
    columns: dict[str, list[Any]] = {}
    n_rows: int | None = None
    for i, tensor in enumerate(payload["inputs"]):
        if not isinstance(tensor, dict) or not {"name", "shape", "datatype", "data"} <= set(tensor):
            raise RequestError(f"inputs[{i}] needs 'name', 'shape', 'datatype' and 'data'")
        name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
        if not isinstance(name, str) or name in columns:
            raise RequestError(f"inputs[{i}].name must be a unique string")
        if datatype not in V2_DATATYPES:
            raise RequestError(
                f"inputs[{i}] ({name}): datatype {datatype!r} is not one of {sorted(V2_DATATYPES)}",
                errors=[FieldError(name, None, f"unknown datatype {datatype!r}")],
            )
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise RequestError(
                f"inputs[{i}] ({name}): shape must be [rows] or [rows, 1] for a column tensor; got {shape}",
                errors=[FieldError(name, None, f"shape {shape}")],
            )
        values = _flatten(tensor["data"])
        if len(values) != shape[0]:
            raise RequestError(
                f"inputs[{i}] ({name}): shape {shape} says {shape[0]} values but data holds {len(values)}",
                errors=[FieldError(name, None, "data does not match shape")],
            )
        if n_rows is not None and shape[0] != n_rows:
            raise RequestError(f"inputs[{i}] ({name}) has {shape[0]} rows, earlier inputs {n_rows}")
        n_rows = shape[0]
        _check_datatype(name, datatype, values)
        columns[name] = values
    if not n_rows:
        raise RequestError("the inputs hold no rows")
    return V2Request(batch=RawBatch(columns=columns, n_rows=n_rows), request_id=request_id, outputs=names)


def _check_datatype(name: str, datatype: str, values: list[Any]) -> None:
    ok: tuple[type, ...]
    if datatype == "BYTES":
        ok = (str, type(None))
    elif datatype == "BOOL":
        ok = (bool, type(None))
    else:
        ok = (int, float, type(None))
    for row, value in enumerate(values):
        if not isinstance(value, ok) or (datatype != "BOOL" and isinstance(value, bool)):
            raise RequestError(
                f"column {name!r} row {row}: {value!r} is not a {datatype} value",
                status=422,
                errors=[FieldError(name, row, f"{value!r} is not a {datatype} value")],
            )
