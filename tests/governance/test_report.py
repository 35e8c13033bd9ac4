"""The governance report and model card of a real run: sections, escaping, artifacts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

import govml
from govml.config import PipelineConfig
from govml.errors import GovmlError
from govml.governance.model_card import build_model_card
from govml.governance.report import (
    MODEL_CARD_ARTIFACT,
    REPORT_ARTIFACT,
    SECTION_IDS,
    parse_model_ref,
    publish_report,
    render_report,
    report_for_registered,
)
from govml.record import RunRecord

ReportInputs = tuple[dict[str, Any], dict[str, Path]]


class _Page(HTMLParser):
    """What the tests look at in a rendered page: sections, tags, attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))
        if tag == "section":
            self.sections[values["id"] or ""] = values.get("data-state") or ""


def _minimal_record(**config_overrides: Any) -> RunRecord:
    config = {
        "name": "bare",
        "data": {"train": "train.csv", "target": "y"},
        **config_overrides,
    }
    return RunRecord(
        pipeline="bare",
        started_at=datetime.now(UTC),
        govml_version=govml.__version__,
        config=PipelineConfig.model_validate(config).model_dump(mode="json"),
    )


def test_report_of_real_run_has_every_section(report_inputs: ReportInputs) -> None:
    record, plots = report_inputs
    html = render_report(record, plots=plots)
    page = _Page(html)
    assert tuple(page.sections) == SECTION_IDS
    for present in (
        "model-details",
        "metrics",
        "training-data",
        "fairness",
        "mitigation",
        "explanations",
        "carbon",
        "caveats",
    ):
        assert page.sections[present] == "present", present
    # Each plot lands in its own section.
    start = {sid: html.index(f'<section id="{sid}"') for sid in SECTION_IDS}
    for caption, sid in (
        ("fairness selection rates", "fairness"),
        ("fairness tradeoff sex", "mitigation"),
        ("shap importance", "explanations"),
    ):
        where = html.index(f'alt="{caption}"')
        following = SECTION_IDS[SECTION_IDS.index(sid) + 1]
        assert start[sid] < where < start[following], caption
    chosen = record["mitigation"]["chosen"]
    assert chosen is None or f"{chosen} (chosen)" in html
    top = record["explanations"]["importance"][0]
    assert f"{top['mean_abs_shap']:.4g}" in html
    evaluation = record["evaluation"]
    primary = evaluation["primary_metric"]
    assert f"{evaluation['metrics'][primary]['value']:.4g}" in html
    assert f"{evaluation['metrics'][primary]['ci_low']:.4g}" in html
    assert record["data"]["data_hash"] in html
    for attribute in record["fairness"]["attributes"]:
        assert attribute["attribute"] in html
    images = [value for tag, name, value in page.attributes if tag == "img" and name == "src"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    # Nothing that could make a request: no scripts, no links or sources off the page.
    assert "script" not in page.tags and "link" not in page.tags
    for _, name, value in page.attributes:
        if name in {"src", "href"}:
            assert value.startswith(("data:", "#")), value


def test_sections_of_stages_that_did_not_run(tmp_path: Path) -> None:
    record = _minimal_record()
    page = _Page(render_report(record, plots={}))
    assert tuple(page.sections) == SECTION_IDS
    for section in (
        "metrics",
        "evaluation-data",
        "training-data",
        "fairness",
        "mitigation",
        "explanations",
        "privacy",
        "carbon",
        "compliance",
    ):
        assert page.sections[section] == "not-run", section
    html = render_report(record.model_dump(mode="json"))
    assert "Not stated (governance.intended_use" in html
    assert "Not assessed in this run: fairness, explanations, privacy." in html


def test_user_text_is_escaped(report_inputs: ReportInputs, tmp_path: Path) -> None:
    record, plots = report_inputs
    attack = "<script>alert('x')</script>"
    hostile = json.loads(json.dumps(record))
    hostile["config"]["description"] = attack
    hostile["config"]["governance"]["intended_use"] = '"><img src=x onerror=alert(1)>'
    hostile["config"]["governance"]["limitations"] = [attack]
    hostile["fairness"]["attributes"][0]["groups"][0]["group"] = attack
    hostile["pipeline"] = "</title><script>alert(2)</script>"
    html = render_report(hostile, plots={"<b>bold</b>": plots["fairness_selection_rates"]})
    page = _Page(html)
    assert "script" not in page.tags
    assert "<b>" not in html
    assert not any(name.startswith("on") for _, name, _ in page.attributes)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


def test_plots_are_inlined_and_bad_files_reported(
    tmp_path: Path, report_inputs: ReportInputs
) -> None:
    _, plots = report_inputs
    not_image = tmp_path / "shap_summary.png"
    not_image.write_text("<svg onload=alert(1)>")
    html = render_report(
        _minimal_record(),
        plots={
            "fairness_plot": plots["fairness_selection_rates"],
            "shap_summary": not_image,
            "roc_curve": tmp_path / "missing.png",
        },
    )
    assert html.count("data:image/png;base64,") == 1
    assert "Plot &#39;shap_summary&#39; is not a PNG or JPEG image; left out." in html
    assert "Plot &#39;roc_curve&#39; could not be read" in html
    page = _Page(html)
    # A plot claims its section even when the stage itself recorded nothing.
    assert page.sections["explanations"] == "present"


def test_model_card_follows_mitchell_sections(report_inputs: ReportInputs) -> None:
    record, _ = report_inputs
    card = build_model_card(record)
    assert list(card)[2:] == [
        "model_details",
        "intended_use",
        "factors",
        "metrics",
        "evaluation_data",
        "training_data",
        "quantitative_analyses",
        "ethical_considerations",
        "compliance",
        "caveats_and_recommendations",
    ]
    assert card["model_details"]["version"] == record["registration"]["version"]
    assert card["model_details"]["owner"]["name"] == "Retail Credit Analytics"
    auc = next(m for m in card["metrics"]["performance"] if m["metric"] == "roc_auc")
    interval = auc["confidence_interval"]
    assert interval["lower"] <= auc["value"] <= interval["upper"]
    assert card["training_data"]["sha256"] == record["data"]["data_hash"]
    assert set(card["factors"]["evaluated_groups"]) >= {"sex", "foreign_worker"}
    assert record["config"]["governance"]["limitations"][0] in card["caveats_and_recommendations"]
    json.dumps(card)  # JSON-able as it stands
    with pytest.raises(TypeError, match="expected a RunRecord"):
        build_model_card(["not", "a", "record"])  # type: ignore[arg-type]


def test_publish_report_logs_both_artifacts(
    report_inputs: ReportInputs, mlflow_client: MlflowClient, real_run: RunRecord, tmp_path: Path
) -> None:
    record, plots = report_inputs
    run_id = real_run.run_id
    assert run_id is not None
    uri = publish_report(mlflow_client, run_id, record, plots)
    assert uri == f"{mlflow_client.get_run(run_id).info.artifact_uri}/{REPORT_ARTIFACT}"
    listed = {a.path for a in mlflow_client.list_artifacts(run_id, "govml")}
    assert {REPORT_ARTIFACT, MODEL_CARD_ARTIFACT} <= listed
    card = json.loads(
        Path(
            mlflow_client.download_artifacts(run_id, MODEL_CARD_ARTIFACT, str(tmp_path))
        ).read_text()
    )
    assert card == json.loads(json.dumps(build_model_card(record)))
    html = Path(
        mlflow_client.download_artifacts(run_id, REPORT_ARTIFACT, str(tmp_path))
    ).read_text()
    assert tuple(_Page(html).sections) == SECTION_IDS


def test_report_for_registered_alias(
    real_run: RunRecord, mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    out = report_for_registered(mlflow_client, f"{real_run.pipeline}@champion", tmp_path / "r.html")
    assert tuple(_Page(out.read_text()).sections) == SECTION_IDS
    assert (
        json.loads((tmp_path / "r.model_card.json").read_text())["model_details"]["run_id"]
        == real_run.run_id
    )
    by_version = report_for_registered(mlflow_client, f"{real_run.pipeline}/1", tmp_path / "v.html")
    assert by_version.exists()
    with pytest.raises(GovmlError, match="no such registered model version"):
        report_for_registered(mlflow_client, f"{real_run.pipeline}@nope", tmp_path / "x.html")


@pytest.mark.parametrize("ref", ["credit-risk", "@champion", "credit-risk@", "credit-risk/one", ""])
def test_bad_model_refs(ref: str) -> None:
    with pytest.raises(GovmlError, match="expected NAME@ALIAS"):
        parse_model_ref(ref)


def test_good_model_refs() -> None:
    assert parse_model_ref("credit-risk@champion") == ("credit-risk", "champion", None)
    assert parse_model_ref("credit-risk/3") == ("credit-risk", None, "3")
