"""OpenAPI descriptions of the request bodies, built from the model's input rules.

The handlers parse raw bytes themselves (for speed and for MLflow's exact protocol),
so FastAPI cannot infer the bodies; these schemas document them in ``/docs`` and let
schemathesis generate requests.
"""

from __future__ import annotations

from typing import Any

from govml.serving.validation import ColumnRule, InputValidator

_JSON_TYPES = {"integer": "integer", "float": "number", "string": "string", "boolean": "boolean"}
_ERROR = {
    "type": "object",
    "properties": {
        "error_code": {"type": "string"},
        "message": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "column": {"type": ["string", "null"]},
                    "row": {"type": ["integer", "null"]},
                    "message": {"type": "string"},
                },
            },
        },
    },
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
    for status, text in [
        (400, "Malformed body"),
        (401, "Missing or wrong API key"),
        (413, "Body or row count over the limit"),
        (415, "Unsupported content type"),
        (422, "A value fails the model's signature or schema; names the column and row"),
    ]
}


def _value(rule: ColumnRule) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    if rule.kind in _JSON_TYPES:
        schema["type"] = [_JSON_TYPES[rule.kind], "null"] if rule.nullable else _JSON_TYPES[rule.kind]
    return schema


def invocations_body(validator: InputValidator) -> dict[str, Any]:
    record = {
        "type": "object",
        "properties": {r.name: _value(r) for r in validator.rules},
        "required": [r.name for r in validator.rules if r.required],
    }
    columns = {
        "type": "object",
        "properties": {r.name: {"type": "array", "items": _value(r)} for r in validator.rules},
    }
    split = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}, "example": validator.input_names},
            "data": {"type": "array", "items": {"type": "array"}},
        },
    }
    records = {"type": "array", "items": record, "minItems": 1}
    body = {
        "oneOf": [
            {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": split}},
            {"type": "object", "required": ["dataframe_records"], "properties": {"dataframe_records": records}},
            {"type": "object", "required": ["instances"], "properties": {"instances": records}},
            {"type": "object", "required": ["inputs"], "properties": {"inputs": {"oneOf": [columns, records]}}},
        ]
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body}, "text/csv": {"schema": {"type": "string"}}},
        }
    }


def v2_body(validator: InputValidator) -> dict[str, Any]:
    datatypes = {"integer": "INT64", "float": "FP64", "string": "BYTES", "boolean": "BOOL"}
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "enum": validator.input_names},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
            "datatype": {"type": "string", "enum": sorted(set(datatypes.values()))},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    body = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": tensor, "minItems": 1},
            "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        },
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}
