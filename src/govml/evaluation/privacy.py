"""Privacy risk: membership inference against a trained model, and personal data in columns.

:func:`membership_inference_risk` runs threshold attacks that guess whether a row was in
the training set from the model's loss or confidence on it (Yeom et al., 2018): a model
that memorised its training rows gives them a visibly lower loss. The attack's ROC AUC
and advantage (largest TPR - FPR) measure the leak.

:func:`scan_personal_data` looks for columns holding personal data (e-mails, phone
numbers, card numbers, national ids, person names) before training, with Presidio
(:mod:`govml.pii`) on sampled values and hints from the column names.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score, roc_curve

from govml.errors import DataError

_EPS = 1e-12


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttackResult(_Model):
    attack: Literal["loss", "confidence"]
    auc: float = Field(description="ROC AUC of telling members from non-members (0.5 = chance)")
    advantage: float = Field(description="largest TPR - FPR over thresholds (0 = chance)")


class PrivacyRiskReport(_Model):
    """Membership-inference risk of a trained model; ``passed`` when the AUC stays under the limit."""

    n_members: int
    n_nonmembers: int
    attacks: list[AttackResult]
    auc: float = Field(description="the strongest attack's AUC")
    advantage: float
    auc_max: float
    passed: bool
    member_mean_loss: float
    nonmember_mean_loss: float


def _per_row_loss(model: Any, X: pd.DataFrame, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss per row (log loss for classifiers, squared error otherwise) and top confidence."""
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X), dtype=float)
        classes = np.asarray(getattr(model, "classes_", np.arange(proba.shape[1])))
        index = np.searchsorted(classes, y)
        known = (index < len(classes)) & (classes[np.minimum(index, len(classes) - 1)] == y)
        p_true = np.where(known, proba[np.arange(len(y)), np.minimum(index, len(classes) - 1)], 0.0)
        return -np.log(np.clip(p_true, _EPS, 1.0)), proba.max(axis=1)
    prediction = np.asarray(model.predict(X), dtype=float)
    return (prediction - y.astype(float)) ** 2, None


def _attack(scores_members: np.ndarray, scores_nonmembers: np.ndarray) -> tuple[float, float]:
    membership = np.r_[np.ones(len(scores_members)), np.zeros(len(scores_nonmembers))]
    scores = np.r_[scores_members, scores_nonmembers]
    fpr, tpr, _ = roc_curve(membership, scores)
    return float(roc_auc_score(membership, scores)), float(np.max(tpr - fpr))


def membership_inference_risk(
    model: Any,
    X_members: pd.DataFrame,
    y_members: Any,
    X_nonmembers: pd.DataFrame,
    y_nonmembers: Any,
    *,
    auc_max: float = 0.6,
    max_rows: int = 5000,
    seed: int = 0,
) -> PrivacyRiskReport:
    """Loss and confidence threshold attacks on equal-sized samples of members and non-members.

    Members are training rows, non-members held-out rows (validation or test), both raw
    feature frames with their encoded targets. At most ``max_rows`` of each are used.
    """
    if len(X_members) != len(y_members) or len(X_nonmembers) != len(y_nonmembers):
        raise DataError("membership_inference_risk: features and targets differ in length")
    n = min(len(X_members), len(X_nonmembers), max_rows)
    if n < 10:
        raise DataError(f"membership_inference_risk needs at least 10 members and non-members, got {n}")
    if not 0.5 <= auc_max <= 1:
        raise DataError(f"auc_max must be between 0.5 and 1, got {auc_max}")
    rng = np.random.default_rng(seed)
    pick_m = np.sort(rng.choice(len(X_members), n, replace=False))
    pick_n = np.sort(rng.choice(len(X_nonmembers), n, replace=False))
    loss_m, conf_m = _per_row_loss(model, X_members.iloc[pick_m], np.asarray(y_members)[pick_m])
    loss_n, conf_n = _per_row_loss(model, X_nonmembers.iloc[pick_n], np.asarray(y_nonmembers)[pick_n])
    # Lower loss and higher confidence point to a member: negate the loss so higher = member.
    attacks = [AttackResult(attack="loss", **dict(zip(("auc", "advantage"), _attack(-loss_m, -loss_n), strict=True)))]
    if conf_m is not None and conf_n is not None:
        auc, adv = _attack(conf_m, conf_n)
        attacks.append(AttackResult(attack="confidence", auc=auc, advantage=adv))
    strongest = max(attacks, key=lambda a: a.auc)
    return PrivacyRiskReport(
        n_members=n,
        n_nonmembers=n,
        attacks=attacks,
        auc=strongest.auc,
        advantage=max(a.advantage for a in attacks),
        auc_max=auc_max,
        passed=strongest.auc <= auc_max,
        member_mean_loss=float(loss_m.mean()),
        nonmember_mean_loss=float(loss_n.mean()),
    )


# Column-name words that suggest personal data, matched against the name's tokens.
_NAME_HINTS: dict[str, str] = {
    "email": "EMAIL_ADDRESS", "mail": "EMAIL_ADDRESS", "e-mail": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER", "telephone": "PHONE_NUMBER", "mobile": "PHONE_NUMBER",
    "cell": "PHONE_NUMBER", "fax": "PHONE_NUMBER",
    "ssn": "NATIONAL_ID", "nin": "NATIONAL_ID", "passport": "NATIONAL_ID", "nhs": "NATIONAL_ID",
    "national_id": "NATIONAL_ID", "social_security": "NATIONAL_ID", "tax_id": "NATIONAL_ID",
    "card": "CREDIT_CARD", "iban": "IBAN_CODE", "account_number": "IBAN_CODE",
    "name": "PERSON", "firstname": "PERSON", "lastname": "PERSON", "surname": "PERSON",
    "fullname": "PERSON", "address": "LOCATION", "street": "LOCATION", "postcode": "LOCATION",
    "zip": "LOCATION", "ip": "IP_ADDRESS", "birthdate": "DATE_OF_BIRTH", "dob": "DATE_OF_BIRTH",
}
_LONG_NUMBER_DIGITS = 9


class PiiColumnFinding(_Model):
    column: str
    entities: dict[str, float] = Field(
        default_factory=dict, description="entity type -> share of sampled distinct values holding it"
    )
    name_hint: str | None = Field(default=None, description="entity type the column name suggests")
    severity: Literal["high", "low"] = Field(description="high: found in the values; low: name only")
    message: str


class PiiScanReport(_Model):
    """Columns that look like personal data; a warning before training, not a gate."""

    scanned_columns: list[str]
    sample_rows: int
    engine: Literal["presidio", "column names only"]
    min_fraction: float
    findings: list[PiiColumnFinding]
    has_personal_data: bool
    notes: list[str] = Field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [f.message for f in self.findings]


def _name_hint(column: str) -> str | None:
    lowered = column.lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", column).lower()) if t]
    for key, entity in _NAME_HINTS.items():
        if "_" in key and key in lowered.replace("-", "_").replace(" ", "_"):
            return entity
        if key in tokens:
            return entity
    return None


def _text_values(series: pd.Series, sample_rows: int, seed: int) -> list[str] | None:
    """Distinct values worth scanning as text, or None for columns that cannot hold PII text."""
    values = series.dropna()
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_float_dtype(series):
        return None
    if pd.api.types.is_integer_dtype(series):
        # Short integers (ages, counts) are not identifiers; long ones may be phones or cards.
        if values.empty or values.abs().astype(str).str.len().median() < _LONG_NUMBER_DIGITS:
            return None
    distinct = pd.Series(values.astype(str).unique())
    if len(distinct) > sample_rows:
        distinct = distinct.sample(sample_rows, random_state=seed)
    return distinct.tolist()


def scan_personal_data(
    df: pd.DataFrame,
    *,
    sample_rows: int = 200,
    min_fraction: float = 0.2,
    seed: int = 0,
) -> PiiScanReport:
    """Flag columns whose values (a sample of distinct ones) or names suggest personal data.

    A column is flagged ``high`` when at least ``min_fraction`` of its sampled values
    hold an entity Presidio recognises, ``low`` when only its name suggests one.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError("scan_personal_data needs a pandas DataFrame")
    if sample_rows < 1 or not 0 < min_fraction <= 1:
        raise DataError("scan_personal_data: sample_rows must be >= 1 and min_fraction in (0, 1]")
    from govml.pii import PiiEngineError, scan_values

    engine: Literal["presidio", "column names only"] = "presidio"
    notes: list[str] = []
    findings: list[PiiColumnFinding] = []
    for column in map(str, df.columns):
        hint = _name_hint(column)
        entities: dict[str, float] = {}
        values = _text_values(df[column], sample_rows, seed) if engine == "presidio" else None
        if values:
            try:
                # The column name gives Presidio the context words ("phone", "ssn") it scores by.
                found = scan_values([f"{column}: {v}" for v in values], sample=sample_rows, seed=seed)
            except PiiEngineError as exc:
                engine, found = "column names only", {}
                notes.append(f"value scan skipped: {exc}")
            entities = {k: round(v, 4) for k, v in found.items() if v >= min_fraction}
        if entities:
            listed = ", ".join(f"{k} in {v:.0%}" for k, v in entities.items())
            findings.append(PiiColumnFinding(
                column=column, entities=entities, name_hint=hint, severity="high",
                message=f"column {column!r} holds personal data ({listed} of sampled values): "
                        "drop it (data.drop_columns) or pseudonymise it before training",
            ))
        elif hint is not None:
            findings.append(PiiColumnFinding(
                column=column, name_hint=hint, severity="low",
                message=f"column {column!r}: its name suggests {hint}; check that it holds no personal data",
            ))
    return PiiScanReport(
        scanned_columns=[str(c) for c in df.columns],
        sample_rows=sample_rows,
        engine=engine,
        min_fraction=min_fraction,
        findings=findings,
        has_personal_data=any(f.severity == "high" for f in findings),
        notes=notes,
    )
