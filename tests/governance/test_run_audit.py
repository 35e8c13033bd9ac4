"""Audit entries of a real pipeline run."""

from __future__ import annotations

from pathlib import Path

import pytest

from govml.governance.audit import AuditLog, sha256_hex
from govml.governance.run_audit import (
    audit_registration,
    audit_run_finished,
    audit_run_started,
    audit_stage,
)
from govml.record import RunRecord


def test_run_events_are_chained_and_hash_the_run(real_run: RunRecord, tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", actor="pipeline@test")
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text("name: german-credit\n")
    started = audit_run_started(log, real_run, config_path=config_file)
    assert started.inputs == {
        "config": sha256_hex(real_run.config),
        "pipeline_yaml": sha256_hex(config_file),
    }
    for stage in real_run.stages:
        audit_stage(log, real_run, stage)
    registered = audit_registration(log, real_run)
    finished = audit_run_finished(log, real_run, report_html="<html></html>")

    assert real_run.data is not None and real_run.registration is not None
    actions = [e.action for e in log.entries(model=real_run.pipeline)]
    assert actions == [
        "run.start",
        *(f"stage.{s.name}" for s in real_run.stages),
        "model.register",
        *("alias.set" for _ in real_run.registration.aliases),
        "run.finish",
    ]
    data_entry = next(e for e in log.entries() if e.action == "stage.data")
    assert data_entry.outputs == {"data": real_run.data.data_hash}
    assert registered[0].subject.version == real_run.registration.version
    assert {e.subject.alias for e in registered[1:]} == set(real_run.registration.aliases)
    assert finished.outputs["record"] == sha256_hex(real_run.model_dump(mode="json"))
    assert finished.outputs["report"] == sha256_hex("<html></html>")
    assert all(e.subject.run_id == real_run.run_id for e in log.entries())
    assert log.verify().ok


def test_registration_needed(real_run: RunRecord, tmp_path: Path) -> None:
    unregistered = real_run.model_copy(update={"registration": None})
    with pytest.raises(ValueError, match="no registration"):
        audit_registration(AuditLog(tmp_path / "audit.jsonl"), unregistered)
