"""Audit entries of a pipeline run, rendered from its record.

The pipeline calls these at the moments they describe: :func:`audit_run_started` once the
record has its run id, :func:`audit_stage` as each stage ends, :func:`audit_registration`
after the registry accepted the version, :func:`audit_run_finished` last. Inputs and
outputs are SHA-256 digests: of the pipeline YAML and its parsed config, of the data
files (``data_hash``), of the registered tags, of the final record and report.
"""

from __future__ import annotations

import os
from pathlib import Path

from govml.governance.audit import AuditEntry, AuditLog, AuditSubject, sha256_hex
from govml.record import RunRecord, StageStatus


def _subject(
    record: RunRecord, *, version: str | None = None, alias: str | None = None
) -> AuditSubject:
    return AuditSubject(model=record.pipeline, version=version, alias=alias, run_id=record.run_id)


def audit_run_started(
    log: AuditLog, record: RunRecord, *, config_path: str | Path | None = None
) -> AuditEntry:
    inputs = {"config": sha256_hex(record.config)}
    if config_path is not None:
        inputs["pipeline_yaml"] = sha256_hex(Path(config_path))
    return log.append(
        "run.start",
        _subject(record),
        details={
            "govml_version": record.govml_version,
            "requirements": record.config.get("responsible_ai", {}).get("requirements"),
            "tracking_uri": record.tracking_uri,
        },
        inputs=inputs,
    )


def audit_stage(log: AuditLog, record: RunRecord, stage: StageStatus) -> AuditEntry:
    """``stage.<name>`` with its status and duration; the data stage outputs the data hash."""
    outputs = {}
    if stage.name == "data" and record.data is not None:
        outputs["data"] = record.data.data_hash
    return log.append(
        f"stage.{stage.name}",
        _subject(record),
        details=stage.model_dump(mode="json", exclude={"name"}),
        inputs={"data": record.data.data_hash} if record.data is not None and not outputs else None,
        outputs=outputs or None,
    )


def audit_registration(log: AuditLog, record: RunRecord) -> list[AuditEntry]:
    """``model.register`` for the new version, then ``alias.set`` for each alias it got."""
    registration = record.registration
    if registration is None:
        raise ValueError("the record has no registration to audit")
    tags = registration.tags
    entries = [
        log.append(
            "model.register",
            _subject(record, version=registration.version),
            details={
                "model_id": registration.model_id,
                "model_uri": registration.model_uri,
                "gates_passed": tags.get("govml.gates_passed"),
                "failed_gates": record.failed_gates,
                "compliance_score": tags.get("govml.compliance_score"),
            },
            inputs={"data": record.data.data_hash} if record.data is not None else None,
            outputs={"tags": sha256_hex(tags)},
        )
    ]
    for alias in registration.aliases:
        entries.append(
            log.append(
                "alias.set",
                _subject(record, version=registration.version, alias=alias),
                details={"by": "pipeline"},
            )
        )
    return entries


def audit_run_finished(
    log: AuditLog, record: RunRecord, *, report_html: str | None = None
) -> AuditEntry:
    outputs = {"record": sha256_hex(record.model_dump(mode="json"))}
    if report_html is not None:
        outputs["report"] = sha256_hex(report_html)
    return log.append(
        "run.finish",
        _subject(record, version=record.registration.version if record.registration else None),
        details={"status": record.status, "failed_gates": record.failed_gates},
        outputs=outputs,
    )


def audit_server_start(
    log: AuditLog,
    server: str,
    *,
    host: str,
    port: int,
    model: str | None = None,
    version: str | None = None,
    alias: str | None = None,
    run_id: str | None = None,
    details: dict[str, object] | None = None,
    inputs: dict[str, str] | None = None,
) -> AuditEntry:
    """``server.start``: a model server (``serve``) or the LLM gateway (``llm``) began
    answering on host:port; ``inputs`` hash what it serves (model files, gateway YAML)."""
    return log.append(
        "server.start",
        AuditSubject(model=model, version=version, alias=alias, run_id=run_id),
        details={"server": server, "host": host, "port": port, "pid": os.getpid(), **(details or {})},
        inputs=inputs,
    )
