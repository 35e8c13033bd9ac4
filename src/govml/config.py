"""The typed model of ``pipeline.yaml``.

Every section is a pydantic model that forbids unknown keys, so a typo is an error
that names the field instead of a silently ignored setting. Paths in the file are
resolved against the file's own folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from govml.errors import ConfigError

ModelType = Literal["lightgbm", "xgboost", "random_forest", "logistic_regression"]
Task = Literal["auto", "classification", "regression"]
Requirements = Literal["strict", "advisory"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnConstraint(_Section):
    """Constraints the YAML adds to the inferred schema of one column."""

    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float | bool] | None = None
    nullable: bool | None = None
    unique: bool = False


class DataConfig(_Section):
    train: Path
    test: Path | None = None
    target: str
    task: Task = "auto"
    positive_class: str | int | None = None
    drop_columns: list[str] = Field(default_factory=list)
    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    validation_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 42
    source: str | None = Field(default=None, description="Provenance: where the data comes from.")
    licence: str | None = None


class ValidationConfig(_Section):
    on_error: Literal["fail", "drop"] = "fail"
    constraints: dict[str, ColumnConstraint] = Field(default_factory=dict)
    max_error_rows: Annotated[int, Field(ge=1)] = 50


class DriftConfig(_Section):
    psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    p_value: Annotated[float, Field(gt=0, lt=1)] = 0.05
    js_threshold: Annotated[float, Field(gt=0, le=1)] = 0.1


class FeaturesConfig(_Section):
    numeric: list[str] | None = None
    categorical: list[str] | None = None
    scaling: Literal["standard", "none"] = "standard"
    max_categories: Annotated[int, Field(ge=2)] = 50
    drift: DriftConfig = DriftConfig()


class SearchConfig(_Section):
    n_trials: Annotated[int, Field(ge=1)] = 20
    timeout_seconds: Annotated[float, Field(gt=0)] | None = 120
    metric: str | None = None
    pruning: bool = True


class TrainingConfig(_Section):
    model: ModelType = "lightgbm"
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchConfig = SearchConfig()


class FairnessConfig(_Section):
    demographic_parity_difference_max: Annotated[float, Field(gt=0, le=1)] = 0.1
    demographic_parity_ratio_min: Annotated[float, Field(ge=0, le=1)] = 0.8
    equalized_odds_difference_max: Annotated[float, Field(gt=0, le=1)] | None = None
    min_group_size: Annotated[int, Field(ge=1)] = 30


MitigationMethod = Literal["exponentiated_gradient", "grid_search", "threshold_optimizer"]


def _all_mitigation_methods() -> list[MitigationMethod]:
    return ["exponentiated_gradient", "grid_search", "threshold_optimizer"]


class MitigationConfig(_Section):
    enabled: bool = False
    methods: list[MitigationMethod] = Field(default_factory=_all_mitigation_methods)
    sensitive_attribute: str | None = None
    max_accuracy_loss: Annotated[float, Field(ge=0, le=1)] = 0.015


class DifferentialPrivacyConfig(_Section):
    enabled: bool = False
    epsilon: Annotated[float, Field(gt=0)] = 1.0
    model: Literal["logistic_regression", "naive_bayes", "random_forest"] = "logistic_regression"


class PrivacyConfig(_Section):
    membership_auc_max: Annotated[float, Field(ge=0.5, le=1)] = 0.6
    pii_scan: bool = True
    differential_privacy: DifferentialPrivacyConfig = DifferentialPrivacyConfig()


class ExplanationsConfig(_Section):
    enabled: bool = True
    sample_size: Annotated[int, Field(ge=10)] = 500
    top_features: Annotated[int, Field(ge=1)] = 5


class PerformanceConfig(_Section):
    min_improvement_pct: float = 0.0
    min_metric: float | None = None


class ResponsibleAIConfig(_Section):
    requirements: Requirements = "advisory"
    sensitive_attributes: list[str] = Field(default_factory=list)
    fairness: FairnessConfig = FairnessConfig()
    mitigation: MitigationConfig = MitigationConfig()
    explanations: ExplanationsConfig = ExplanationsConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    performance: PerformanceConfig = PerformanceConfig()


class CarbonConfig(_Section):
    country_iso_code: Annotated[str, Field(min_length=3, max_length=3)] = "USA"
    budget_kg: Annotated[float, Field(gt=0)] | None = None

    @field_validator("country_iso_code")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class TrackingConfig(_Section):
    uri: str | None = None
    experiment: str | None = None


class ComputeConfig(_Section):
    """Where the search's trials run: in this process, or as tasks on a Ray cluster (docs/scale.md)."""

    engine: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, description="Ray address (ray://host:10001, auto); none: a local Ray")
    num_cpus: Annotated[int, Field(ge=1)] | None = None


class OwnerConfig(_Section):
    name: str
    email: str | None = None
    role: str | None = None


class GovernanceConfig(_Section):
    intended_use: str | None = None
    out_of_scope_use: str | None = None
    owner: OwnerConfig | None = None
    limitations: list[str] = Field(default_factory=list)


class PipelineConfig(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    description: str | None = None
    data: DataConfig
    validation: ValidationConfig = ValidationConfig()
    features: FeaturesConfig = FeaturesConfig()
    training: TrainingConfig = TrainingConfig()
    responsible_ai: ResponsibleAIConfig = ResponsibleAIConfig()
    carbon: CarbonConfig = CarbonConfig()
    tracking: TrackingConfig = TrackingConfig()
    compute: ComputeConfig = ComputeConfig()
    governance: GovernanceConfig = GovernanceConfig()

    @model_validator(mode="after")
    def _check_columns(self) -> PipelineConfig:
        target = self.data.target
        if target in self.data.drop_columns:
            raise ValueError(f"data.drop_columns lists the target {target!r}; remove it from drop_columns")
        dropped = set(self.data.drop_columns)
        for name in self.responsible_ai.sensitive_attributes:
            if name == target:
                raise ValueError(f"responsible_ai.sensitive_attributes lists the target {target!r}")
        mitigation_attr = self.responsible_ai.mitigation.sensitive_attribute
        if mitigation_attr and mitigation_attr not in self.responsible_ai.sensitive_attributes:
            raise ValueError(
                f"responsible_ai.mitigation.sensitive_attribute {mitigation_attr!r} must be one of "
                f"responsible_ai.sensitive_attributes {self.responsible_ai.sensitive_attributes}"
            )
        if mitigation_attr and mitigation_attr in dropped:
            raise ValueError(
                f"the mitigation attribute {mitigation_attr!r} is in data.drop_columns, but a mitigated "
                "model needs it in its input"
            )
        return self


def _format_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _format_validation_error(error: ValidationError, source: Path) -> str:
    lines = [f"{source}: invalid pipeline configuration"]
    for item in error.errors():
        where = _format_location(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"  - {where}: unknown key (check the spelling; see docs/pipeline.md)")
        elif kind == "missing":
            lines.append(f"  - {where}: required field is missing")
        elif kind == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            lines.append(f"  - {where}: got {item.get('input')!r}; allowed values: {expected}")
        else:
            lines.append(f"  - {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def _resolve(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    return path if path.is_absolute() else (base / path).resolve()


def load_config(path: str | Path) -> PipelineConfig:
    """Read, validate and resolve a pipeline YAML file.

    Raises ConfigError naming each offending field; relative data paths are resolved
    against the YAML file's folder and must exist.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"{source}: no such pipeline file")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (name, data, training, ...)")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None

    base = source.resolve().parent
    data = config.data.model_copy(
        update={"train": _resolve(config.data.train, base), "test": _resolve(config.data.test, base)}
    )
    for field, value in (("data.train", data.train), ("data.test", data.test)):
        if value is not None and not value.is_file():
            raise ConfigError(f"{source}: {field}: file {value} does not exist")
    return config.model_copy(update={"data": data})
