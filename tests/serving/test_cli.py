"""``govml monitor`` exit codes and ``govml serve`` refusals, through the real Typer app."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from govml.cli import app, main

if TYPE_CHECKING:
    from conftest import AdultData, RunningServer, Store

    from govml.serving.loading import LoadedModel

runner = CliRunner()


@pytest.fixture
def env(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    monkeypatch.setenv("GOVML_HOME", str(tmp_path))
    return tmp_path


def test_monitor_a_file_without_drift_exits_0(env: Path, registered: str, adult: AdultData) -> None:
    batch = env / "batch.csv"
    adult.test_X.to_csv(batch, index=False)
    result = runner.invoke(app, ["monitor", registered, "--batch", str(batch)])
    assert result.exit_code == 0, result.output
    assert "0 of 14 columns drifted" in result.output
    assert "age" in result.output and "PSI" in result.output


def test_monitor_a_drifted_file_exits_1(env: Path, registered: str, adult: AdultData) -> None:
    shifted = adult.test_X.copy()
    shifted["age"] = shifted["age"] + 25
    shifted["sex"] = "Female"
    batch = env / "shifted.parquet"
    shifted.to_parquet(batch)
    result = runner.invoke(app, ["monitor", registered, "--batch", str(batch)])
    assert result.exit_code == 1, result.output
    assert "age" in result.output and "sex" in result.output and "2 of 14" in result.output
    # a looser threshold on the share of drifted columns lets it pass
    assert runner.invoke(app, ["monitor", registered, "--batch", str(batch), "--max-share", "0.5"]).exit_code == 0


def test_monitor_logged_traffic(env: Path, make_server, loaded, adult: AdultData, registered: str) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server(loaded, home=env)
    shifted = adult.test_X.head(300).copy()
    shifted["hours_per_week"] = 99
    body = json.loads(shifted.to_json(orient="split", index=False))
    assert httpx.post(f"{server.url}/invocations", json={"dataframe_split": body}).status_code == 200
    deadline = time.monotonic() + 10
    result = runner.invoke(app, ["monitor", registered])
    # The log is written off the request path, in batches: until then monitor finds no rows (DataError).
    while not isinstance(result.exception, SystemExit) and time.monotonic() < deadline:
        time.sleep(0.2)
        result = runner.invoke(app, ["monitor", registered])
    assert result.exit_code == 1, result.output
    assert "300 logged predictions" in result.output
    assert "hours_per_week" in result.output


def _govml(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run the real entry point, which turns known errors into messages and exit codes."""
    monkeypatch.setattr(sys, "argv", ["govml", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    return int(stop.value.code or 0), " ".join((captured.out + captured.err).split())


def test_monitor_errors_exit_2(
    env: Path, registered: str, foreign_model: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, output = _govml(["monitor", registered], capsys, monkeypatch)
    assert code == 2 and "no prediction log" in output
    code, output = _govml(["monitor", registered, "--batch", str(env / "nope.csv")], capsys, monkeypatch)
    assert code == 2 and "does not exist" in output
    code, output = _govml(["monitor", foreign_model, "--batch", str(env / "nope.csv")], capsys, monkeypatch)
    assert code == 2 and "drift monitoring is unavailable" in output
    code, output = _govml(["monitor", "adult@nosuchalias"], capsys, monkeypatch)
    assert code == 2 and "nosuchalias" in output


@pytest.mark.parametrize(
    "spec, message",
    [
        ("/tmp/some/model", "refused"),
        ("file:///tmp/some/model", "refused"),
        ("s3://bucket/model", "refused"),
        ("adult@nosuchalias", "nosuchalias"),
        ("adult/99", "99"),
        ("runs:/0123456789abcdef/model", "0123456789abcdef"),
    ],
)
def test_serve_refuses_models_outside_the_registry(
    env: Path, registered: str, spec: str, message: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, output = _govml(["serve", spec], capsys, monkeypatch)
    assert code == 2, output
    assert message in output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_govml_serve_subprocess(store: Store, registered: str, adult: AdultData, tmp_path: Path) -> None:
    """The real command, in its own process, with API keys on."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.tracking_uri, "GOVML_HOME": str(tmp_path),
           "GOVML_API_KEYS": "k1"}
    govml = Path(sys.executable).with_name("govml")
    process = subprocess.Popen([str(govml), "serve", registered, "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        body = {"dataframe_split": json.loads(adult.test_X.head(3).to_json(orient="split", index=False))}
        url = f"http://127.0.0.1:{port}/invocations"
        assert httpx.post(url, json=body).status_code == 401
        response = httpx.post(url, json=body, headers={"Authorization": "Bearer k1"})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode is not None
    assert pd.notna(process.returncode)
    from govml.governance.audit import AuditLog

    starts = [e for e in AuditLog(tmp_path / "audit.jsonl").entries() if e.action == "server.start"]
    assert len(starts) == 1 and starts[0].details["port"] == port


def test_server_start_is_audited_with_the_model_hash(
    loaded: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudpickle

    from govml.governance.audit import AuditLog, sha256_hex
    from govml.serving.cli import _audit_start

    monkeypatch.setenv("GOVML_HOME", str(tmp_path))
    _audit_start(loaded, "127.0.0.1", 8123, inference="compiled")
    log = AuditLog(tmp_path / "audit.jsonl")
    (entry,) = log.entries(model=loaded.ref.name)
    assert entry.action == "server.start" and entry.details["server"] == "serve"
    assert entry.subject.version == loaded.ref.version and entry.details["port"] == 8123
    assert entry.inputs["model"] == sha256_hex(cloudpickle.dumps(loaded.sklearn_model))
    assert log.verify().ok
