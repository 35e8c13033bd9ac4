"""The sections of the governance report, built from the run record as plain blocks.

Each ``*_section`` function takes the record dict (``RunRecord.model_dump(mode="json")``)
and returns a :class:`Section` of blocks (text, facts, tables, figures) that the
template lays out; a stage that did not run gives a section marked "not run". Values
are formatted here and escaped by the template, so no record text reaches the HTML raw.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from govml.governance.model_card import caveats, dig

Tone = Literal["", "ok", "fail", "warn", "note", "muted", "num"]

_IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
_MAX_ROWS = 200
_FAIRNESS_PLOTS = ("fairness", "selection")
_TRADEOFF_PLOTS = ("tradeoff", "trade_off", "mitigation")
_EXPLANATION_PLOTS = ("shap", "explan", "importance", "dependence")


@dataclass(frozen=True)
class Cell:
    text: str
    tone: Tone = ""


@dataclass(frozen=True)
class Block:
    kind: Literal["heading", "text", "score", "facts", "table", "items", "figure"]
    text: str = ""
    tone: Tone = ""
    rows: Sequence[Any] = ()
    headers: Sequence[str] = ()
    caption: str = ""
    items: Sequence[str] = ()
    data_uri: str = ""


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    not_run: bool = False


class PlotPool:
    """The run's plots by name; each section claims the ones that match its keywords."""

    def __init__(self, plots: Mapping[str, Path]) -> None:
        self._plots = dict(sorted(plots.items()))
        self._claimed: set[str] = set()

    def claim(self, *keywords: str, exclude: tuple[str, ...] = ()) -> list[Block]:
        names = [
            name
            for name in self._plots
            if name not in self._claimed
            and any(k in name.lower() for k in keywords)
            and not any(k in name.lower() for k in exclude)
        ]
        return self._figures(names)

    def rest(self) -> list[Block]:
        return self._figures([name for name in self._plots if name not in self._claimed])

    def _figures(self, names: list[str]) -> list[Block]:
        self._claimed.update(names)
        return [figure(name, self._plots[name]) for name in names]


# --- blocks -------------------------------------------------------------------------


def heading(text: str) -> Block:
    return Block("heading", text=text)


def text(value: str, tone: Tone = "") -> Block:
    return Block("text", text=value, tone=tone)


def facts(rows: Iterable[tuple[str, Any]]) -> Block:
    return Block("facts", rows=[(label, fmt(value)) for label, value in rows])


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> Block:
    cells = [[c if isinstance(c, Cell) else cell(c) for c in row] for row in rows]
    if len(cells) > _MAX_ROWS:
        caption = f"{caption} (first {_MAX_ROWS} of {len(cells)} rows)".strip()
        cells = cells[:_MAX_ROWS]
    return Block("table", headers=list(headers), rows=cells, caption=caption)


def items(values: Iterable[str]) -> Block:
    return Block("items", items=[str(v) for v in values])


def figure(name: str, path: Path) -> Block:
    """A plot inlined as a data URI; PNG and JPEG only (checked by magic bytes)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return text(f"Plot {name!r} could not be read ({exc.strerror}).", "warn")
    mime = next((m for magic, m in _IMAGE_TYPES.items() if data.startswith(magic)), None)
    if mime is None:
        return text(f"Plot {name!r} is not a PNG or JPEG image; left out.", "warn")
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return Block("figure", caption=name.replace("_", " "), data_uri=uri)


def cell(value: Any) -> Cell:
    if isinstance(value, bool):
        return Cell("yes" if value else "no")
    if isinstance(value, int | float):
        return Cell(fmt(value), "num")
    return Cell(fmt(value))


def status_cell(passed: bool | None, yes: str = "pass", no: str = "fail") -> Cell:
    if passed is None:
        return Cell("n/a", "muted")
    return Cell(yes, "ok") if passed else Cell(no, "fail")


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits, None as a dash, containers as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def generic_blocks(data: Any) -> list[Block]:
    """A readable rendering of a result whose structure the report does not know:
    scalars as facts, lists of records as tables, nested mappings under sub-headings."""
    if not isinstance(data, Mapping):
        return [text(fmt(data))]
    blocks: list[Block] = []
    scalars = [(k.replace("_", " "), v) for k, v in data.items() if not _is_container(v)]
    if scalars:
        blocks.append(facts(scalars))
    for key, value in data.items():
        title = key.replace("_", " ")
        if isinstance(value, Mapping) and value:
            blocks.append(heading(title))
            blocks.append(facts((str(k).replace("_", " "), v) for k, v in value.items()))
        elif isinstance(value, list) and value:
            blocks.append(heading(title))
            if all(isinstance(v, Mapping) for v in value):
                headers = list(dict.fromkeys(k for v in value for k in v))
                blocks.append(table(headers, ([v.get(h) for h in headers] for v in value)))
            else:
                blocks.append(items(fmt(v) for v in value))
    return blocks


def _is_container(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple)


# --- sections -----------------------------------------------------------------------


def model_details_section(rec: Mapping[str, Any], card: Mapping[str, Any]) -> Section:
    d = card["model_details"]
    owner = d.get("owner") or {}
    owner_text = ", ".join(str(owner[k]) for k in ("name", "role", "email") if owner.get(k))
    section = Section("model-details", "Model details")
    section.blocks.append(
        facts(
            [
                ("Name", d.get("name")),
                ("Description", d.get("description")),
                ("Registered version", d.get("version")),
                ("Model id", d.get("model_id")),
                ("Aliases", ", ".join(d.get("aliases") or []) or None),
                ("Model type", d.get("model_type")),
                ("Task", d.get("task")),
                ("Classes (index order)", ", ".join(d.get("classes") or []) or None),
                ("Owner / human oversight", owner_text or None),
                ("Responsible-AI requirements", d.get("requirements")),
                ("Run status", d.get("status")),
                ("MLflow run", d.get("run_id")),
                ("Started", d.get("started_at")),
                ("Finished", d.get("finished_at")),
                ("govml version", d.get("govml_version")),
            ]
        )
    )
    if not owner_text:
        section.blocks.append(
            text("No owner or human-oversight contact is stated (governance.owner).", "warn")
        )
    params = d.get("hyperparameters") or {}
    if params:
        section.blocks.append(heading("Hyperparameters"))
        section.blocks.append(table(["parameter", "value"], sorted(params.items())))
    return section


def intended_use_section(rec: Mapping[str, Any], card: Mapping[str, Any]) -> Section:
    use = card["intended_use"]
    section = Section("intended-use", "Intended use and out-of-scope use")
    for label, value, key in (
        ("Intended use", use.get("intended_use"), "intended_use"),
        ("Out-of-scope use", use.get("out_of_scope_use"), "out_of_scope_use"),
    ):
        section.blocks.append(heading(label))
        if value:
            section.blocks.append(text(str(value)))
        else:
            section.blocks.append(
                text(f"Not stated (governance.{key} in the pipeline YAML).", "warn")
            )
    return section


def factors_section(rec: Mapping[str, Any], card: Mapping[str, Any]) -> Section:
    factors = card["factors"]
    section = Section("factors", "Factors")
    attributes = factors.get("sensitive_attributes") or []
    if not attributes:
        section.blocks.append(
            text(
                "No sensitive attributes declared (responsible_ai.sensitive_attributes): "
                "performance was not disaggregated by group.",
                "warn",
            )
        )
        return section
    section.blocks.append(
        text("Relevant factors: the sensitive attributes below, alone and in intersection.")
    )
    groups = factors.get("evaluated_groups") or {}
    rows = [(name, len(g), ", ".join(g)) for name, g in groups.items()]
    if rows:
        section.blocks.append(table(["attribute", "groups", "group labels"], rows))
    else:
        section.blocks.append(items(attributes))
        section.blocks.append(
            text("Groups were not evaluated: the fairness stage did not run.", "warn")
        )
    return section


def metrics_section(rec: Mapping[str, Any], plots: PlotPool) -> Section:
    section = Section("metrics", "Metrics against baselines")
    evaluation = rec.get("evaluation")
    if evaluation is None:
        return _missing(section, "Evaluation did not run: no test metrics.")
    baselines = evaluation.get("baselines") or []
    primary = evaluation.get("primary_metric")
    rows = []
    has_ci = False
    for name, metric in (evaluation.get("metrics") or {}).items():
        low, high = metric.get("ci_low"), metric.get("ci_high")
        has_ci = has_ci or low is not None
        ci = (
            Cell(f"[{fmt(low)}, {fmt(high)}]", "num")
            if low is not None
            else Cell("not computed", "muted")
        )
        label = f"{name} (primary)" if name == primary else name
        rows.append(
            [
                label,
                metric.get("value"),
                ci,
                *((b.get("metrics") or {}).get(name) for b in baselines),
            ]
        )
    headers = ["metric", "model", "95% CI", *(f"baseline: {b.get('name')}" for b in baselines)]
    caption = (
        f"{evaluation.get('evaluated_on', 'test')} split, {fmt(evaluation.get('n_rows'))} rows"
    )
    section.blocks.append(table(headers, rows, caption))
    if has_ci:
        section.blocks.append(
            text("Intervals: percentile bootstrap over the test rows, 95%.", "note")
        )
    else:
        section.blocks.append(text("Confidence intervals were not computed for this run.", "warn"))
    direction = "higher" if evaluation.get("higher_is_better", True) else "lower"
    improvement = evaluation.get("improvement_pct")
    tone: Tone = "ok" if improvement is not None and improvement > 0 else "fail"
    section.blocks.append(
        text(
            f"{primary} ({direction} is better): {fmt(improvement)}% improvement over the best "
            f"baseline, {evaluation.get('best_baseline')}.",
            tone,
        )
    )
    section.blocks.extend(
        plots.claim("roc", "calibration", "confusion", "precision_recall", "metric")
    )
    return section


def evaluation_data_section(rec: Mapping[str, Any], card: Mapping[str, Any]) -> Section:
    section = Section("evaluation-data", "Evaluation data")
    data = card["evaluation_data"]
    if data is None:
        return _missing(section, "The data stage did not run.")
    section.blocks.append(
        facts(
            [
                ("Source", data.get("source")),
                ("Rows", data.get("rows")),
                ("Metrics computed on", dig(rec, "evaluation.evaluated_on")),
            ]
        )
    )
    drift = data.get("drift_from_training")
    if drift:
        tone: Tone = "warn" if drift.get("drifted_columns") else "ok"
        section.blocks.append(
            text(
                f"{len(drift.get('drifted_columns') or [])} of "
                f"{len(drift.get('columns') or [])} columns "
                "drifted between training and evaluation data (table under Training data).",
                tone,
            )
        )
    return section


def training_data_section(rec: Mapping[str, Any], card: Mapping[str, Any]) -> Section:
    section = Section("training-data", "Training data")
    data = card["training_data"]
    if data is None:
        return _missing(section, "The data stage did not run.")
    splits = data.get("split_rows") or {}
    balance = data.get("class_balance") or {}
    section.blocks.append(
        facts(
            [
                ("Source file", data.get("source")),
                ("Provenance", data.get("provenance")),
                ("Licence", data.get("licence")),
                ("SHA-256", data.get("sha256")),
                ("Rows read", data.get("rows_read")),
                ("Rows dropped by validation", data.get("rows_dropped")),
                ("Splits", ", ".join(f"{k}: {fmt(v)}" for k, v in splits.items()) or None),
                ("Target", data.get("target")),
                ("Class balance", ", ".join(f"{k}: {fmt(v)}" for k, v in balance.items()) or None),
                ("Numeric features", ", ".join(dig(data, "features.numeric", [])) or None),
                ("Categorical features", ", ".join(dig(data, "features.categorical", [])) or None),
            ]
        )
    )
    section.blocks.append(heading("Validation"))
    issues = dig(rec, "data.issues", [])
    count = data.get("validation_issue_count") or 0
    policy = data.get("validation_policy")
    if count:
        section.blocks.append(text(f"{count} validation issues (policy: {policy}).", "warn"))
        section.blocks.append(
            table(
                ["line", "column", "check", "failure case"],
                (
                    [i.get("line"), i.get("column"), i.get("check"), i.get("failure_case")]
                    for i in issues
                ),
            )
        )
    else:
        section.blocks.append(
            text(f"All rows passed the inferred schema and constraints (policy: {policy}).", "ok")
        )
    section.blocks.extend(_drift_blocks(dig(rec, "features.drift")))
    section.blocks.extend(_search_blocks(rec.get("training")))
    return section


def _drift_blocks(drift: Mapping[str, Any] | None) -> list[Block]:
    blocks = [heading("Drift: training vs evaluation data")]
    if not drift:
        return [*blocks, text("The drift check did not run.", "warn")]
    thresholds = drift.get("thresholds") or {}
    rows = [
        [
            c.get("column"),
            c.get("kind"),
            c.get("psi"),
            c.get("ks_p_value"),
            c.get("chi2_p_value"),
            c.get("js_distance"),
            c.get("null_rate_reference"),
            c.get("null_rate_batch"),
            status_cell(not c.get("drifted"), "stable", "drifted"),
        ]
        for c in drift.get("columns") or []
    ]
    caption = (
        f"reference {fmt(drift.get('n_reference'))} rows, batch {fmt(drift.get('n_batch'))} rows; "
        f"thresholds: PSI ≥ {fmt(thresholds.get('psi_threshold'))}, "
        f"p < {fmt(thresholds.get('p_value'))}, "
        f"JS ≥ {fmt(thresholds.get('js_threshold'))}"
    )
    headers = [
        "column",
        "kind",
        "PSI",
        "KS p",
        "χ² p",
        "JS distance",
        "null ref",
        "null batch",
        "status",
    ]
    return [*blocks, table(headers, rows, caption)]


def _search_blocks(training: Mapping[str, Any] | None) -> list[Block]:
    blocks = [heading("Training and hyperparameter search")]
    if not training:
        return [*blocks, text("Training did not run.", "warn")]
    blocks.append(
        facts(
            [
                ("Model type", training.get("model_type")),
                (
                    "Search metric",
                    f"{training.get('search_metric')} ({training.get('search_direction')})",
                ),
                ("Best validation score", training.get("best_validation_score")),
                ("Trials completed", training.get("n_trials_completed")),
                ("Trials pruned", training.get("n_trials_pruned")),
                ("Stopped by", training.get("stopped_by")),
                ("Search time (s)", training.get("duration_s")),
            ]
        )
    )
    if training.get("stopped_by") == "carbon_budget":
        blocks.append(
            text("The carbon budget stopped the search before its trial or time limit.", "warn")
        )
    return blocks


def fairness_section(rec: Mapping[str, Any], plots: PlotPool) -> Section:
    section = Section("fairness", "Fairness per group")
    report = rec.get("fairness")
    if report is None:
        return _missing(section, "The fairness stage did not run for this model.")
    if "attributes" not in report:
        section.blocks.extend(generic_blocks(report))
        section.blocks.extend(plots.claim(*_FAIRNESS_PLOTS, exclude=_TRADEOFF_PLOTS))
        return section
    passed = report.get("passed")
    section.blocks.append(
        text(
            "Fairness gates passed."
            if passed
            else "Fairness gates failed: " + "; ".join(report.get("failures") or []),
            "ok" if passed else "fail",
        )
    )
    thresholds = report.get("thresholds") or {}
    section.blocks.append(
        facts(
            [
                ("Rows assessed", report.get("n_rows")),
                ("Overall selection rate", report.get("overall_selection_rate")),
                ("Overall accuracy", report.get("overall_accuracy")),
                (
                    "Max demographic parity difference",
                    thresholds.get("demographic_parity_difference_max"),
                ),
                ("Min demographic parity ratio", thresholds.get("demographic_parity_ratio_min")),
                ("Max equalized odds difference", thresholds.get("equalized_odds_difference_max")),
                ("Min group size scored", thresholds.get("min_group_size")),
            ]
        )
    )
    for attribute in report["attributes"]:
        section.blocks.extend(_attribute_blocks(attribute))
    if report.get("notes"):
        section.blocks.append(items(report["notes"]))
    before = rec.get("fairness_before_mitigation")
    if before and "attributes" in before:
        section.blocks.append(heading("Before and after mitigation"))
        after = {a["attribute"]: a for a in report["attributes"]}
        rows = [
            [
                a["attribute"],
                a.get("demographic_parity_difference"),
                (after.get(a["attribute"]) or {}).get("demographic_parity_difference"),
                a.get("equalized_odds_difference"),
                (after.get(a["attribute"]) or {}).get("equalized_odds_difference"),
            ]
            for a in before["attributes"]
        ]
        headers = ["attribute", "DP difference before", "after", "EO difference before", "after"]
        section.blocks.append(table(headers, rows))
    section.blocks.extend(plots.claim(*_FAIRNESS_PLOTS, exclude=_TRADEOFF_PLOTS))
    return section


def _missing(section: Section, message: str) -> Section:
    """Mark ``section`` as a stage that did not run, saying what is missing."""
    section.not_run = True
    section.blocks.append(text(message, "warn"))
    return section


def _attribute_blocks(attribute: Mapping[str, Any]) -> list[Block]:
    kind = "intersection" if attribute.get("intersection") else "attribute"
    status = attribute.get("status")
    tone: Tone = {"pass": "ok", "fail": "fail"}.get(status or "", "warn")  # type: ignore[assignment]
    blocks = [
        heading(f"{attribute.get('attribute')} ({kind})"),
        text(
            f"Status: {status}. Demographic parity difference "
            f"{fmt(attribute.get('demographic_parity_difference'))}, "
            f"ratio {fmt(attribute.get('demographic_parity_ratio'))}, equalized odds difference "
            f"{fmt(attribute.get('equalized_odds_difference'))}.",
            tone,
        ),
    ]
    rows = [
        [
            g.get("group"),
            g.get("count"),
            g.get("selection_rate"),
            g.get("accuracy"),
            g.get("true_positive_rate"),
            g.get("false_positive_rate"),
            Cell("too small: not scored", "warn") if g.get("small") else Cell("scored"),
        ]
        for g in attribute.get("groups") or []
    ]
    caption = f"grouping: {attribute['binned']}" if attribute.get("binned") else ""
    blocks.append(
        table(["group", "rows", "selection rate", "accuracy", "TPR", "FPR", ""], rows, caption)
    )
    for line in [*(attribute.get("failures") or []), *(attribute.get("notes") or [])]:
        blocks.append(text(str(line), "note"))
    return blocks


def mitigation_section(rec: Mapping[str, Any], plots: PlotPool) -> Section:
    section = Section("mitigation", "Mitigation trade-off")
    result = rec.get("mitigation")
    figures = plots.claim(*_TRADEOFF_PLOTS)
    if result is None:
        section.not_run = not figures
        section.blocks.append(
            text("No mitigation was run (not needed, or mitigation is not enabled).", "muted")
        )
        section.blocks.extend(figures)
        return section
    if "candidates" not in result:
        section.blocks.extend([*generic_blocks(result), *figures])
        return section
    chosen = result.get("chosen")
    if chosen:
        section.blocks.append(
            text(
                f"Chosen: {chosen}, the most accurate candidate within the bound; validation "
                f"accuracy loss {fmt(result.get('accuracy_loss'))} "
                f"(allowed {fmt(result.get('max_accuracy_loss'))}).",
                "ok" if result.get("within_accuracy_budget") else "warn",
            )
        )
    else:
        section.blocks.append(
            text("No candidate met the bound: the unmitigated model was kept.", "fail")
        )
    section.blocks.append(
        facts(
            [
                ("Sensitive attribute", result.get("sensitive_feature")),
                ("Bound on demographic parity difference", result.get("bound")),
                ("Minimum demographic parity ratio", result.get("ratio_min")),
                ("Safety margin on validation", result.get("margin")),
                (
                    "Compared on",
                    f"{result.get('evaluated_on')} ({fmt(result.get('n_validation_rows'))} rows)",
                ),
                ("Search time (s)", result.get("duration_s")),
            ]
        )
    )
    candidates = [result.get("unmitigated"), *result.get("candidates", [])]
    rows = [
        [
            Cell(f"{c.get('name')} (chosen)", "ok")
            if c.get("chosen") or c.get("name") == chosen
            else c.get("name"),
            c.get("method"),
            ", ".join(f"{k}={fmt(v)}" for k, v in (c.get("setting") or {}).items()),
            c.get("accuracy"),
            c.get("demographic_parity_difference"),
            c.get("demographic_parity_ratio"),
            status_cell(c.get("meets_constraint"), "yes", "no"),
            c.get("fit_seconds"),
        ]
        for c in candidates
        if c
    ]
    headers = [
        "candidate",
        "method",
        "setting",
        "accuracy",
        "DP difference",
        "DP ratio",
        "meets bound",
        "fit (s)",
    ]
    section.blocks.append(table(headers, rows, "every candidate tried, unmitigated first"))
    if result.get("needs_sensitive_feature"):
        section.blocks.append(
            text(
                f"The chosen model reads {result.get('sensitive_feature')} at prediction time "
                "(post-processing): requests must include it.",
                "warn",
            )
        )
    section.blocks.extend(text(str(note), "note") for note in result.get("notes") or [])
    section.blocks.extend(figures)
    return section


def explanations_section(rec: Mapping[str, Any], plots: PlotPool) -> Section:
    section = Section("explanations", "Explanations")
    report = rec.get("explanations")
    figures = plots.claim(*_EXPLANATION_PLOTS)
    if report is None:
        section.not_run = not figures
        section.blocks.append(text("No explanations were produced for this model.", "muted"))
        section.blocks.extend(figures)
        return section
    if "importance" not in report:
        section.blocks.extend([*generic_blocks(report), *figures])
        return section
    section.blocks.append(
        facts(
            [
                ("Explainer", report.get("explainer")),
                ("Model explained", report.get("explained_model")),
                ("Attribution scale", report.get("output")),
                ("Rows explained", report.get("n_rows")),
                ("Top features", ", ".join(report.get("top_features") or []) or None),
                ("Time (s)", report.get("duration_s")),
            ]
        )
    )
    rows = [[i.get("rank"), i.get("feature"), i.get("mean_abs_shap")] for i in report["importance"]]
    section.blocks.append(table(["rank", "feature", "mean |SHAP|"], rows, "global importance"))
    section.blocks.extend(text(str(note), "note") for note in report.get("notes") or [])
    section.blocks.extend(figures)
    return section


def privacy_section(rec: Mapping[str, Any], plots: PlotPool) -> Section:
    section = Section("privacy", "Privacy analysis")
    privacy = rec.get("privacy")
    if not privacy or all(v is None for v in privacy.values()):
        return _missing(section, "Privacy risk was not assessed in this run.")
    parts = (
        ("pii_scan", "Personal data in the training columns", _pii_blocks),
        ("membership_inference", "Membership-inference risk", _membership_blocks),
        ("differential_privacy", "Differentially private training", generic_blocks),
    )
    for key, title, render in parts:
        section.blocks.append(heading(title))
        part = privacy.get(key)
        section.blocks.extend(render(part) if part is not None else [text("Not run.", "muted")])
    section.blocks.extend(plots.claim("privacy", "membership"))
    return section


def _pii_blocks(scan: Mapping[str, Any]) -> list[Block]:
    if "findings" not in scan:
        return generic_blocks(scan)
    scanned = scan.get("scanned_columns") or []
    findings = scan.get("findings") or []
    how = (
        f"{len(scanned)} columns, {fmt(scan.get('sample_rows'))} sampled rows, {scan.get('engine')}"
    )
    if scan.get("has_personal_data"):
        columns = ", ".join(str(f.get("column")) for f in findings if f.get("severity") == "high")
        blocks = [text(f"Personal data found ({how}): {columns or 'see below'}.", "fail")]
    else:
        blocks = [text(f"No personal data found ({how}).", "ok")]
    if findings:
        rows = [
            [
                f.get("column"),
                Cell(str(f.get("severity")), "fail" if f.get("severity") == "high" else "warn"),
                ", ".join(f"{k} {fmt(v)}" for k, v in (f.get("entities") or {}).items()),
                f.get("name_hint"),
                f.get("message"),
            ]
            for f in findings
        ]
        headers = ["column", "severity", "entities (share of values)", "name suggests", "finding"]
        blocks.append(table(headers, rows))
    blocks.extend(text(str(note), "note") for note in scan.get("notes") or [])
    return blocks


def _membership_blocks(risk: Mapping[str, Any]) -> list[Block]:
    if "attacks" not in risk:
        return generic_blocks(risk)
    passed = risk.get("passed")
    blocks = [
        text(
            f"Strongest attack AUC {fmt(risk.get('auc'))} "
            f"(allowed up to {fmt(risk.get('auc_max'))}; "
            f"0.5 is chance), advantage {fmt(risk.get('advantage'))}: "
            + ("within the bound." if passed else "above the bound: the model leaks membership."),
            "ok" if passed else "fail",
        ),
        facts(
            [
                ("Members (training rows)", risk.get("n_members")),
                ("Non-members (test rows)", risk.get("n_nonmembers")),
                ("Mean loss, members", risk.get("member_mean_loss")),
                ("Mean loss, non-members", risk.get("nonmember_mean_loss")),
            ]
        ),
        table(
            ["attack", "AUC", "advantage (max TPR - FPR)"],
            (
                [a.get("attack"), a.get("auc"), a.get("advantage")]
                for a in risk.get("attacks") or []
            ),
        ),
    ]
    return blocks


def carbon_section(rec: Mapping[str, Any]) -> Section:
    section = Section("carbon", "Carbon footprint")
    carbon = rec.get("carbon")
    if carbon is None:
        return _missing(section, "Energy and emissions were not measured.")
    energy, emissions = carbon.get("energy_kwh"), carbon.get("emissions_kg")
    budget = carbon.get("budget_kg")
    section.blocks.append(
        facts(
            [
                ("Energy", f"{fmt(energy)} kWh"),
                ("Emissions", f"{fmt(emissions)} kg CO2e"),
                ("Grid", carbon.get("country_iso_code")),
                ("Method", carbon.get("method")),
                ("Budget", f"{fmt(budget)} kg CO2e" if budget is not None else "none set"),
                ("Per prediction", _per_prediction(rec)),
            ]
        )
    )
    if carbon.get("budget_exhausted"):
        section.blocks.append(
            text(
                "The carbon budget was exhausted: the hyperparameter search stopped early.", "warn"
            )
        )
    stages = carbon.get("stages") or []
    if stages:
        rows = [
            [s.get("stage"), s.get("duration_s"), s.get("energy_kwh"), s.get("emissions_kg")]
            for s in stages
        ]
        section.blocks.append(table(["stage", "seconds", "kWh", "kg CO2e"], rows, "per stage"))
    return section


def _per_prediction(rec: Mapping[str, Any]) -> str:
    carbon = rec.get("carbon") or {}
    if carbon.get("per_prediction_kg") is not None:
        kwh = fmt(carbon.get("per_prediction_kwh"))
        return f"{fmt(carbon['per_prediction_kg'])} kg CO2e ({kwh} kWh)"
    stage = next((s for s in carbon.get("stages") or [] if s.get("stage") == "evaluation"), None)
    rows = dig(rec, "evaluation.n_rows")
    if stage is None or not rows:
        return "not measured"
    per_kg = stage.get("emissions_kg", 0.0) / rows
    return (
        f"at most {fmt(per_kg)} kg CO2e (evaluation-stage emissions / {fmt(rows)} test rows; "
        "the stage also fits the baselines, so this is an upper bound)"
    )


def compliance_section(rec: Mapping[str, Any]) -> Section:
    section = Section("compliance", "Compliance checklist")
    compliance = rec.get("compliance")
    if compliance is None:
        return _missing(section, "The compliance checklist was not scored.")
    checklist = [i for i in compliance.get("items") or [] if isinstance(i, Mapping)]
    failed_gates = [str(i.get("gate")) for i in checklist if i.get("gate") and not i.get("passed")]
    section.blocks.append(
        Block(
            "score",
            text=f"{fmt(compliance.get('score'))} / {fmt(compliance.get('max_score', 100))}",
            tone="fail" if failed_gates else "ok",
        )
    )
    if failed_gates:
        section.blocks.append(text("Gates not met: " + ", ".join(failed_gates) + ".", "fail"))
    rows = [
        [
            i.get("title") or i.get("id"),
            Cell("not assessed", "warn")
            if i.get("assessed") is False
            else status_cell(i.get("passed")),
            i.get("weight"),
            i.get("gate") or "",
            i.get("evidence"),
            i.get("reference"),
        ]
        for i in checklist
    ]
    if rows:
        headers = ["item", "status", "weight", "gate", "evidence", "reference"]
        section.blocks.append(table(headers, rows, "EU AI Act Annex IV and NIST AI RMF 1.0"))
    known = {"score", "max_score", "items", "passed_items", "failed_items"}
    section.blocks.extend(generic_blocks({k: v for k, v in compliance.items() if k not in known}))
    return section


def caveats_section(rec: Mapping[str, Any]) -> Section:
    section = Section("caveats", "Caveats and recommendations")
    found = caveats(rec)
    section.blocks.append(
        items(found) if found else text("No caveats were stated or found.", "note")
    )
    return section
