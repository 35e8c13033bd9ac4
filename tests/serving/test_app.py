"""A real uvicorn server on 127.0.0.1 driven with httpx: both protocols, explanations, metrics, bad inputs."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from govml.serving.loading import LoadedModel

if TYPE_CHECKING:
    from conftest import AdultData, RunningServer

JSON = {"content-type": "application/json"}


def _rows(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _split(frame: pd.DataFrame) -> dict:
    return json.loads(frame.to_json(orient="split", index=False))


def _post(server: RunningServer, path: str, body: object, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=json.dumps(body), headers=headers or JSON, timeout=30)


@pytest.fixture(scope="module")
def sample(adult: AdultData) -> pd.DataFrame:
    return adult.test_X.head(40)


def test_mlflow_protocol_formats_agree_with_the_model(
    server: RunningServer, sample: pd.DataFrame, adult_pipeline: Pipeline
) -> None:
    expected = adult_pipeline.predict(sample).tolist()
    columns = {c: json.loads(sample[c].to_json(orient="values")) for c in sample.columns}
    bodies = {
        "dataframe_split": {"dataframe_split": _split(sample)},
        "dataframe_records": {"dataframe_records": _rows(sample)},
        "instances": {"instances": _rows(sample)},
        "inputs (columns)": {"inputs": columns},
        "inputs (records)": {"inputs": _rows(sample)},
        "with params": {"dataframe_split": _split(sample), "params": {}},
    }
    for label, body in bodies.items():
        response = _post(server, "/invocations", body)
        assert response.status_code == 200, (label, response.text)
        assert response.json() == {"predictions": expected}, label
    csv = httpx.post(f"{server.url}/invocations", content=sample.to_csv(index=False),
                     headers={"content-type": "text/csv"})
    assert csv.status_code == 200, csv.text
    assert csv.json()["predictions"] == expected


def test_single_row_as_scalars(server: RunningServer, sample: pd.DataFrame, adult_pipeline: Pipeline) -> None:
    row = _rows(sample.head(1))[0]
    response = _post(server, "/invocations", {"inputs": row})
    assert response.json() == {"predictions": adult_pipeline.predict(sample.head(1)).tolist()}


def test_v2_protocol(server: RunningServer, sample: pd.DataFrame, adult_pipeline: Pipeline) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{server.url}/v2/models/adult").json()
    assert meta["name"] == "adult" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == list(sample.columns)
    assert {i["name"]: i["datatype"] for i in meta["inputs"]}["age"] == "INT64"
    assert meta["parameters"]["inference_path"] == "compiled"
    assert httpx.get(f"{server.url}/v2/models/adult/ready").json()["ready"] is True
    datatype = {"int64": "INT64", "float64": "FP64"}
    inputs = [
        {
            "name": c, "shape": [len(sample)], "datatype": datatype.get(str(sample[c].dtype), "BYTES"),
            "data": json.loads(sample[c].to_json(orient="values")),
        }
        for c in sample.columns
    ]
    response = _post(server, "/v2/models/adult/infer", {"id": "req-1", "inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "adult" and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["data"] == adult_pipeline.predict(sample).tolist()
    proba = np.array(outputs["predict_proba"]["data"]).reshape(outputs["predict_proba"]["shape"])
    assert np.abs(proba - adult_pipeline.predict_proba(sample)).max() <= 1e-6
    only = _post(server, "/v2/models/adult/infer", {"inputs": inputs, "outputs": [{"name": "predict_proba"}]})
    assert [o["name"] for o in only.json()["outputs"]] == ["predict_proba"]
    # [rows, 1] shapes with nested data are the same tensor
    nested = [dict(i, shape=[len(sample), 1], data=[[v] for v in i["data"]]) for i in inputs]
    assert _post(server, "/v2/models/adult/infer", {"inputs": nested}).json()["outputs"][0] == outputs["predict"]
    # the spec's single [rows, features] tensor: features map to the signature's columns in order
    matrix = {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [[1.0, 2.0]]}
    wrong = _post(server, "/v2/models/adult/infer", {"inputs": [matrix]})
    assert wrong.status_code == 400 and str(list(sample.columns)) in wrong.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/other").status_code == 404
    assert _post(server, "/v2/models/other/infer", {"inputs": inputs}).status_code == 404


def test_explain_sums_to_the_model_margin(
    server: RunningServer, sample: pd.DataFrame, adult_pipeline: Pipeline
) -> None:
    response = _post(server, "/explain", {"dataframe_split": _split(sample.head(5))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["feature_names"] == list(sample.columns)
    values = np.array(body["shap_values"])
    assert values.shape == (5, len(sample.columns))
    margin = adult_pipeline.predict_proba(sample.head(5))[:, 1]
    log_odds = np.log(margin / (1 - margin))
    assert np.allclose(body["base_value"] + values.sum(axis=1), log_odds, atol=1e-5)


def test_metrics_and_prediction_log(server: RunningServer, sample: pd.DataFrame) -> None:
    for _ in range(3):
        _post(server, "/invocations", {"dataframe_split": _split(sample)})
    _post(server, "/invocations", {"dataframe_records": [{"age": "old"}]})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'govml_requests_total{endpoint="invocations",status="200"} 3.0' in text
    assert 'govml_request_errors_total{endpoint="invocations",kind="422"} 1.0' in text
    assert "govml_request_latency_seconds_bucket" in text
    assert 'govml_predictions_total{model="adult"} 120.0' in text
    assert "govml_predicted_class_total" in text and "govml_prediction_score_bucket" in text
    assert "govml_carbon_grams_total" in text and "govml_energy_kwh_total" in text
    carbon = [line for line in text.splitlines() if line.startswith("govml_carbon_grams_per_prediction{")]
    assert carbon and float(carbon[0].split()[-1]) > 0
    db = server.home / "predictions.db"
    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            count = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        if count >= 120:
            break
        time.sleep(0.1)
    assert count == 120
    with sqlite3.connect(db) as conn:
        features, prediction = conn.execute("SELECT features, prediction FROM predictions LIMIT 1").fetchone()
    assert set(json.loads(features)) == set(sample.columns)
    assert set(json.loads(prediction)) == {"label", "proba"}


def test_rolling_drift_reaches_metrics(make_server, loaded: LoadedModel, adult: AdultData) -> None:  # type: ignore[no-untyped-def]
    server = make_server(loaded, drift_every=200, drift_window=1000)
    shifted = adult.test_X.head(400).copy()
    shifted["age"] = (shifted["age"] + 30).clip(upper=100)
    response = _post(server, "/invocations", {"dataframe_split": _split(shifted)})
    assert response.status_code == 200
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics").text
        if 'govml_drift_detected{column="age",model="adult"} 1.0' in text:
            break
        time.sleep(0.2)
    assert 'govml_drift_detected{column="age",model="adult"} 1.0' in text
    assert 'govml_drift_detected{column="education",model="adult"} 0.0' in text
    assert 'govml_drift_window_rows{model="adult"} 400.0' in text


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["message"]
    return body


def test_bad_inputs_get_4xx_naming_column_and_row(server: RunningServer, sample: pd.DataFrame) -> None:
    rows = _rows(sample.head(3))
    missing = [{k: v for k, v in r.items() if k != "education"} for r in rows]
    body = _error(_post(server, "/invocations", {"dataframe_records": missing}), 422)
    assert body["errors"][0] == {"column": "education", "row": None, "message": "required column is missing"}

    wrong_type = [dict(r) for r in rows]
    wrong_type[2]["age"] = "forty"
    body = _error(_post(server, "/invocations", {"dataframe_records": wrong_type}), 422)
    assert (body["errors"][0]["column"], body["errors"][0]["row"]) == ("age", 2)
    assert "column 'age' row 2" in body["message"]

    fractional = [dict(r) for r in rows]
    fractional[1]["age"] = 40.5
    body = _error(_post(server, "/invocations", {"dataframe_records": fractional}), 422)
    assert (body["errors"][0]["column"], body["errors"][0]["row"]) == ("age", 1)

    out_of_range = [dict(r) for r in rows]
    out_of_range[1]["age"] = 250
    body = _error(_post(server, "/invocations", {"dataframe_records": out_of_range}), 422)
    assert (body["errors"][0]["column"], body["errors"][0]["row"]) == ("age", 1)
    assert "100" in body["errors"][0]["message"]

    not_allowed = [dict(r) for r in rows]
    not_allowed[0]["sex"] = "Robot"
    body = _error(_post(server, "/invocations", {"dataframe_records": not_allowed}), 422)
    assert (body["errors"][0]["column"], body["errors"][0]["row"]) == ("sex", 0)

    null = [dict(r) for r in rows]
    null[2]["age"] = None
    body = _error(_post(server, "/invocations", {"dataframe_records": null}), 422)
    assert (body["errors"][0]["column"], body["errors"][0]["row"]) == ("age", 2)
    nan_body = json.dumps({"dataframe_split": {"columns": list(sample.columns),
                                               "data": [[math.nan if c == "age" else v for c, v in rows[0].items()]]}})
    response = httpx.post(f"{server.url}/invocations", content=nan_body, headers=JSON)
    assert _error(response, 422)["errors"][0]["column"] == "age"

    # a null where the schema allows it is fine
    allowed_null = [dict(r) for r in rows]
    allowed_null[0]["workclass"] = None
    assert _post(server, "/invocations", {"dataframe_records": allowed_null}).status_code == 200

    several = [dict(r) for r in rows]
    several[0]["age"], several[1]["sex"] = 5, 7
    body = _error(_post(server, "/invocations", {"dataframe_records": several}), 422)
    assert {(e["column"], e["row"]) for e in body["errors"]} == {("age", 0), ("sex", 1)}


def test_malformed_bodies(server: RunningServer, sample: pd.DataFrame) -> None:
    url = f"{server.url}/invocations"
    _error(httpx.post(url, content=b"{not json", headers=JSON), 400)
    _error(httpx.post(url, content=b"\xff\xfe", headers=JSON), 400)
    _error(httpx.post(url, content=b"[1, 2]", headers=JSON), 400)
    _error(_post(server, "/invocations", {"rows": []}), 400)
    _error(_post(server, "/invocations", {"dataframe_split": _split(sample), "instances": []}), 400)
    _error(_post(server, "/invocations", {"dataframe_records": []}), 400)
    _error(_post(server, "/invocations", {"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}), 400)
    _error(_post(server, "/invocations", {"inputs": {"age": [1, 2], "sex": ["Male"]}}), 400)
    _error(httpx.post(url, content=b"age\n1", headers={"content-type": "application/xml"}), 415)
    v2 = f"{server.url}/v2/models/adult/infer"
    response = httpx.post(v2, content=json.dumps({"inputs": [{"name": "age", "shape": [2], "datatype": "INT64",
                                                            "data": [1]}]}), headers=JSON)
    assert response.status_code == 400 and "shape" in response.json()["error"]
    response = httpx.post(v2, content=json.dumps({"inputs": [{"name": "age", "shape": [1], "datatype": "INT64",
                                                            "data": ["x"]}]}), headers=JSON)
    assert response.status_code == 422 and response.json()["errors"][0]["column"] == "age"
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200  # still up


def test_over_large_bodies(make_server, loaded: LoadedModel, sample: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    server = make_server(loaded, max_body_bytes=20_000, max_rows=50)
    big = {"dataframe_split": {"columns": list(sample.columns), "data": _split(sample)["data"] * 20}}
    assert _post(server, "/invocations", big).status_code == 413

    def chunks():  # no content-length: the limit holds while streaming
        yield b'{"dataframe_records": ['
        for _ in range(200):
            yield json.dumps(_rows(sample.head(1))[0]).encode() + b","
        yield b"{}]}"

    streamed = httpx.post(f"{server.url}/invocations", content=chunks(), headers=JSON)
    assert streamed.status_code == 413
    many = {"dataframe_split": {"columns": list(sample.columns), "data": _split(sample)["data"] * 2}}
    response = _post(server, "/invocations", many)
    assert response.status_code == 413 and "50" in response.json()["message"]
    assert _post(server, "/invocations", {"dataframe_split": _split(sample.head(2))}).status_code == 200


def test_api_keys(make_server, loaded: LoadedModel, sample: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    server = make_server(loaded, api_keys=frozenset({"s3cret", "other"}))
    body = {"dataframe_split": _split(sample.head(2))}
    assert _post(server, "/invocations", body).status_code == 401
    assert _post(server, "/invocations", body, {**JSON, "Authorization": "Bearer wrong"}).status_code == 401
    assert _post(server, "/invocations", body, {**JSON, "Authorization": "Bearer s3cret"}).status_code == 200
    assert _post(server, "/invocations", body, {**JSON, "X-API-Key": "other"}).status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/openapi.json").status_code == 401
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # probes stay open


def test_openapi_documents_the_endpoints(server: RunningServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/invocations", "/explain", "/v2/models/{model_name}/infer", "/metrics", "/v2/health/ready"):
        assert path in spec["paths"], path
    body = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(body["oneOf"]) == 4
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_a_model_govml_did_not_train(make_server, store, foreign_model: str, adult: AdultData) -> None:  # type: ignore[no-untyped-def]
    """Logged with mlflow.sklearn.log_model, no govml artifacts: signature validation, no drift, no SHAP."""
    from govml.serving.loading import load_model

    model = load_model(foreign_model, tracking_uri=store.tracking_uri)
    server = make_server(model)
    meta = httpx.get(f"{server.url}/v2/models/foreign").json()
    params = meta["parameters"]
    assert params["validation"] == "signature"
    assert params["drift"].startswith("unavailable")
    assert params["explanations"].startswith("unavailable")
    assert params["inference_path"] == "compiled"
    frame = adult.test_X[["age", "education_num", "hours_per_week", "capital_gain", "workclass", "sex"]].head(30)
    expected = model.sklearn_model.predict(frame.astype({"workclass": object, "sex": object})).tolist()
    response = _post(server, "/invocations", {"dataframe_records": _rows(frame)})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected
    bad = _rows(frame.head(2))
    bad[1]["age"] = "old"
    body = _error(_post(server, "/invocations", {"dataframe_records": bad}), 422)
    assert (body["errors"][0]["column"], body["errors"][0]["row"]) == ("age", 1)
    assert _post(server, "/explain", {"dataframe_records": _rows(frame.head(1))}).status_code == 501
