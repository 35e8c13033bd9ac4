"""Request bodies parsed without a server: the v2 protocol's [rows, features] tensor layout."""

from __future__ import annotations

import json

import pytest

from govml.serving.payload import RequestError, parse_v2_infer

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _body(**tensor: object) -> bytes:
    return json.dumps({"id": "42", "inputs": [tensor], "outputs": [{"name": "predict"}]}).encode()


def test_matrix_tensor_maps_features_to_columns_in_signature_order() -> None:
    # the layout of the v2 specification's examples (and MLServer's sklearn runtime)
    nested = parse_v2_infer(
        _body(name="input-0", shape=[2, 4], datatype="FP32", data=[[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]),
        COLUMNS,
    )
    flat = parse_v2_infer(
        _body(name="input-0", shape=[2, 4], datatype="FP32", data=[5.1, 3.5, 1.4, 0.2, 6.2, 2.9, 4.3, 1.3]),
        COLUMNS,
    )
    for request in (nested, flat):
        assert request.batch.n_rows == 2 and request.request_id == "42" and request.outputs == ["predict"]
        assert request.batch.columns == {
            "sepal_length": [5.1, 6.2], "sepal_width": [3.5, 2.9], "petal_length": [1.4, 4.3], "petal_width": [0.2, 1.3]
        }


def test_matrix_tensor_errors_name_what_to_change() -> None:
    with pytest.raises(RequestError, match=r"needs 4 features, one per input column in this order"):
        parse_v2_infer(_body(name="x", shape=[1, 3], datatype="FP32", data=[1, 2, 3]), COLUMNS)
    with pytest.raises(RequestError, match=r"says 8 values but data holds 7"):
        parse_v2_infer(_body(name="x", shape=[2, 4], datatype="FP32", data=[1] * 7), COLUMNS)
    with pytest.raises(RequestError, match=r"column 'petal_width' row 0: 'a' is not a FP32 value"):
        parse_v2_infer(_body(name="x", shape=[1, 4], datatype="FP32", data=[1, 2, 3, "a"]), COLUMNS)


def test_column_tensors_still_parse_and_win_over_the_matrix_reading() -> None:
    tensor = {"name": "sepal_length", "shape": [2, 1], "datatype": "FP64", "data": [[1.0], [2.0]]}
    body = json.dumps({"inputs": [tensor]})
    request = parse_v2_infer(body.encode(), COLUMNS)
    assert request.batch.columns == {"sepal_length": [1.0, 2.0]}
