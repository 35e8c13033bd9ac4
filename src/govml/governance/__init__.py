"""Governance: audit trail, model lifecycle, compliance checklist, model card and report.

Only the light audit API is re-exported here; import ``govml.governance.report``,
``.lifecycle`` and ``.model_card`` directly (they pull in MLflow and Jinja2).
"""

from govml.governance.audit import AuditEntry, AuditLog, AuditSubject, AuditVerification, verify

__all__ = ["AuditEntry", "AuditLog", "AuditSubject", "AuditVerification", "verify"]
