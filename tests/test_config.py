from __future__ import annotations

from pathlib import Path

import pytest

from govml.config import load_config
from govml.errors import ConfigError
from tests.conftest import EXAMPLES


@pytest.mark.parametrize("example", ["credit-risk", "german-credit", "healthcare-diagnosis"])
def test_every_example_config_loads(example: str) -> None:
    config = load_config(EXAMPLES / example / "pipeline.yaml")
    assert config.name == example
    assert config.data.train.is_file()
    assert config.data.train.is_absolute()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def _data_line() -> str:
    return f"data:\n  train: {EXAMPLES / 'german-credit/data/german.csv.gz'}\n  target: credit\n"


def test_unknown_key_names_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\n" + _data_line() + "trainig:\n  model: lightgbm\n")
    with pytest.raises(ConfigError, match=r"trainig: unknown key"):
        load_config(path)


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\n" + _data_line() + "training:\n  search:\n    n_trials: many\n")
    with pytest.raises(ConfigError, match=r"training\.search\.n_trials"):
        load_config(path)


def test_wrong_literal_lists_allowed_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\n" + _data_line() + "training:\n  model: svm\n")
    with pytest.raises(ConfigError, match=r"training\.model: got 'svm'; allowed values: .*lightgbm"):
        load_config(path)


def test_missing_target(tmp_path: Path) -> None:
    path = _write(tmp_path, f"name: x\ndata:\n  train: {EXAMPLES / 'german-credit/data/german.csv.gz'}\n")
    with pytest.raises(ConfigError, match=r"data\.target: required field is missing"):
        load_config(path)


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\ndata:\n  train: nowhere.csv\n  target: y\n")
    with pytest.raises(ConfigError, match=r"data\.train: file .*nowhere\.csv does not exist"):
        load_config(path)


def test_relative_paths_resolve_against_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "t.csv").write_text("a,y\n1,0\n2,1\n")
    path = _write(tmp_path, "name: x\ndata:\n  train: d/t.csv\n  target: y\n")
    assert load_config(path).data.train == (tmp_path / "d" / "t.csv").resolve()


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "name: [unclosed\n"))


def test_target_in_drop_columns_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\n" + _data_line() + "  drop_columns: [credit]\n")
    with pytest.raises(ConfigError, match="drop_columns lists the target"):
        load_config(path)


def test_unknown_country_is_rejected_at_run_time() -> None:
    from govml.carbon import grid_intensity_g_per_kwh

    assert 100 < grid_intensity_g_per_kwh("USA") < 1000
    with pytest.raises(ConfigError, match="country_iso_code 'XXX'"):
        grid_intensity_g_per_kwh("XXX")
