"""gateway.yaml: the shipped example loads, mistakes name their field, keys are hashed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from govml.errors import ConfigError
from govml.llm.config import (
    API_KEYS_ENV,
    AuthConfig,
    GatewayConfig,
    LocalBackendConfig,
    hash_key,
    load_gateway_config,
    parse_gateway_config,
    resolve_keys,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llm-gateway" / "gateway.yaml"


def minimal(**sections: Any) -> dict[str, Any]:
    return {
        "models": [{"name": "m", "backends": ["b"]}],
        "backends": {"b": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        **sections,
    }


def parse(raw: dict[str, Any]) -> GatewayConfig:
    return parse_gateway_config(raw, source=Path("gateway.yaml"))


def test_example_loads_with_its_routes() -> None:
    config = load_gateway_config(EXAMPLE)
    assert [r.name for r in config.models] == ["smollm2-135m-instruct", "upstream-or-local"]
    assert config.route("upstream-or-local").backends == ["upstream", "smollm2"]  # type: ignore[union-attr]
    assert isinstance(config.backends["smollm2"], LocalBackendConfig)
    assert config.carbon.country_iso_code == "FRA"


def test_defaults_are_safe() -> None:
    config = parse(minimal())
    assert config.auth.required and config.models[0].policy.input == "block"
    assert config.request_log.store_text is False and config.cache.cache_sampled is False


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (minimal(cache={"treshold": 0.9}), "cache.treshold: unknown key"),
        (minimal(models=[{"name": "m", "backends": ["nope"]}]), "undefined backends ['nope']"),
        (
            minimal(models=[{"name": "m", "backends": ["b"], "policy": {"input": "drop"}}]),
            "models.0.policy.input",
        ),
        (minimal(backends={"b": {"type": "openai", "base_url": "ftp://x"}}), "http:// or https://"),
        (minimal(backends={"b": {"type": "vllm"}}), "backends.b"),
        (
            minimal(models=[{"name": "m", "backends": ["b"]}, {"name": "m", "backends": ["b"]}]),
            "duplicate model names",
        ),
        (minimal(cache={"threshold": 1.5}), "cache.threshold"),
        (minimal(cache={"token_threshold": 0}), "cache.token_threshold"),
        (minimal(cache={"token_check": "sometimes"}), "cache.token_check"),
        (minimal(auth={"keys": [{"name": "a", "sha256": "abc"}]}), "64-character hex"),
        (minimal(auth={"keys": [{"name": "a"}]}), "exactly one of sha256 or key_env"),
        (
            minimal(safety={"stream_window_chars": 100, "stream_check_every_chars": 200}),
            "smaller than stream_window_chars",
        ),
        (minimal(models=[]), "models"),
        (minimal(routing={"cooldown_seconds": 0}), "routing.cooldown_seconds"),
        (minimal(routing={"cooldown_after_failures": -1}), "routing.cooldown_after_failures"),
        (minimal(safety={"pii_entities": ["PERSON", "EMAL"]}), "unknown personal-data types ['EMAL']"),
        (minimal(safety={"pii_allow": ["Cloud Storage", " "]}), "safety.pii_allow: Value error, a blank"),
        (minimal(safety={"pii_allow": "Cloud Storage"}), "safety.pii_allow"),
    ],
)
def test_mistakes_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(raw)
    assert message in str(error.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such gateway file"):
        load_gateway_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_gateway_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_gateway_config(bad)


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    raw = minimal(cache={"directory": "state/cache"})
    raw["backends"]["local"] = {"type": "local", "model_file": "models/x.gguf"}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_gateway_config(path)
    assert config.cache.directory == tmp_path / "state" / "cache"
    assert config.backends["local"].model_file == tmp_path / "models" / "x.gguf"  # type: ignore[union-attr]


def test_keys_from_env_and_yaml_are_held_as_hashes() -> None:
    auth = AuthConfig(
        keys=[
            {"name": "team-a", "sha256": hash_key("sk-a"), "budget": {"requests_per_minute": 5}},
            {"name": "team-b", "key_env": "TEAM_B_KEY"},
        ]
    )
    keys = resolve_keys(auth, {API_KEYS_ENV: " sk-x , ,sk-y", "TEAM_B_KEY": "sk-b"})
    assert set(keys) == {hash_key(k) for k in ("sk-a", "sk-b", "sk-x", "sk-y")}
    assert keys[hash_key("sk-a")].tenant == "team-a"
    assert keys[hash_key("sk-a")].budget.requests_per_minute == 5
    assert keys[hash_key("sk-b")].budget == auth.default_budget
    assert keys[hash_key("sk-x")].tenant == f"key-{hash_key('sk-x')[:8]}"
    assert not any("sk-" in repr(entry) for entry in keys.values())


def test_no_keys_is_refused_unless_auth_is_off() -> None:
    with pytest.raises(ConfigError, match=API_KEYS_ENV):
        resolve_keys(AuthConfig(), {})
    assert resolve_keys(AuthConfig(required=False), {}) == {}
    with pytest.raises(ConfigError, match="TEAM_KEY"):
        resolve_keys(AuthConfig(keys=[{"name": "t", "key_env": "TEAM_KEY"}]), {})
