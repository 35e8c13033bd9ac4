"""`govml audit`, `govml models` and `govml report` through the real entry point."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from govml.cli import main
from govml.governance.audit import AuditLog
from govml.record import RunRecord

RegisterVersion = Callable[..., ModelVersion]


def _govml(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """Run ``govml ARGS`` in-process as the console script does; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["govml", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out, err


def _gates(passed: bool, value: float) -> dict[str, str]:
    return {
        "govml.gates_passed": "true" if passed else "false",
        "govml.failed_gates": "" if passed else "privacy",
        "govml.requirements": "strict",
        "govml.primary_metric": "accuracy",
        "govml.metric.accuracy": str(value),
    }


def test_audit_verify_show_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, actor="tester@host")
    log.append("run.start", {"model": "a", "run_id": "r1"})
    log.append("model.register", {"model": "b", "version": "1"}, details={"k": "v"})
    code, out, _ = _govml(capsys, monkeypatch, "audit", "verify", "--log", str(path))
    assert code == 0 and "2 entries, chain intact" in out
    code, out, _ = _govml(
        capsys, monkeypatch, "audit", "show", "--log", str(path), "--model", "b", "--json"
    )
    assert code == 0
    assert [json.loads(line)["action"] for line in out.splitlines()] == ["model.register"]
    code, out, _ = _govml(capsys, monkeypatch, "audit", "show", "--log", str(path))
    assert code == 0 and "run.start" in out and "model.register" in out
    code, out, _ = _govml(capsys, monkeypatch, "audit", "head", "--log", str(path))
    head = log.head()
    assert head is not None and out.strip() == f"2 {head.hash}"

    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[1] + lines[0])
    code, _, err = _govml(capsys, monkeypatch, "audit", "verify", "--log", str(path))
    assert code == 1 and "audit chain broken at seq 2 (line 1)" in err


def test_audit_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "none.jsonl"
    for command in ("verify", "show", "head"):
        code, _, err = _govml(capsys, monkeypatch, "audit", command, "--log", str(missing))
        assert code == 2, command
        assert "audit" in err and "Traceback" not in err


def test_models_promote_refused_and_rollback(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mlflow_client: MlflowClient,
    register_version: RegisterVersion,
    model_name: str,
    governance_home: Path,
) -> None:
    register_version(model_name, _gates(True, 0.80))
    register_version(model_name, _gates(False, 0.95))
    register_version(model_name, _gates(True, 0.85))
    code, out, _ = _govml(capsys, monkeypatch, "models", "promote", model_name, "1")
    assert code == 0 and f"{model_name}@champion -> version 1" in out
    code, _, err = _govml(
        capsys, monkeypatch, "models", "promote", model_name, "2", "--to", "champion"
    )
    assert code == 1 and "its responsible-AI gates failed: privacy" in err
    code, out, _ = _govml(capsys, monkeypatch, "models", "promote", model_name, "3")
    assert code == 0 and "beats the current holder" in out
    code, out, _ = _govml(capsys, monkeypatch, "models", "list")
    assert code == 0 and model_name in out and "failed: privacy" in out
    code, out, _ = _govml(capsys, monkeypatch, "models", "rollback", model_name)
    assert code == 0 and "version 3 -> 1" in out
    assert mlflow_client.get_model_version_by_alias(model_name, "champion").version in (1, "1")
    actions = [
        e.action for e in AuditLog(governance_home / "audit.jsonl").entries(model=model_name)
    ]
    assert actions == ["model.promote", "model.promote.refused", "model.promote", "model.rollback"]
    code, _, err = _govml(capsys, monkeypatch, "models", "promote", "no-such-model", "1")
    assert code == 2 and "no registered model named 'no-such-model'" in err


def test_report_command(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    real_run: RunRecord,
    tmp_path: Path,
) -> None:
    out_file = tmp_path / "report.html"
    code, out, _ = _govml(
        capsys, monkeypatch, "report", f"{real_run.pipeline}@candidate", "--out", str(out_file)
    )
    assert code == 0 and "Report written to" in out
    assert 'id="compliance"' in out_file.read_text()
    code, _, err = _govml(capsys, monkeypatch, "report", "not-a-ref")
    assert code == 2 and "expected NAME@ALIAS" in err
