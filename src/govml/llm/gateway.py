"""A running gateway's parts, built from ``gateway.yaml``: keys, router, safety, cache,
budgets, metrics, carbon model and request log. The FastAPI app only wires HTTP to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from govml.llm.backends import Backend, Cooldowns, Router, build_backends
from govml.llm.budgets import BudgetTracker
from govml.llm.cache_step import CacheStep
from govml.llm.config import GatewayConfig, KeyEntry, resolve_keys
from govml.llm.monitoring import CarbonModel, GatewayMetrics
from govml.llm.request_log import RequestLog
from govml.llm.safety import OutputFilter, PromptGuard
from govml.llm.safety_steps import SafetySteps
from govml.paths import govml_home


def llm_home(home: Path | None = None) -> Path:
    """``$GOVML_HOME/llm`` (created): cache, request log, converted models."""
    folder = (home or govml_home()) / "llm"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _same_encoder(guard: PromptGuard | None, cache: object | None) -> bool:
    from govml.llm.embedding import embedder_identity

    guard_encoder = guard.embedder if guard is not None else None
    cache_encoder = getattr(cache, "embedder", None)
    if guard_encoder is None or cache_encoder is None:
        return False
    return embedder_identity(guard_encoder) == embedder_identity(cache_encoder)  # type: ignore[arg-type]


@dataclass
class Gateway:
    config: GatewayConfig
    keys: dict[str, KeyEntry]
    router: Router
    safety: SafetySteps
    cache: CacheStep
    budgets: BudgetTracker
    metrics: GatewayMetrics
    carbon: CarbonModel
    request_log: RequestLog | None
    owned_backends: list[Backend] = field(default_factory=list)
    owns_cache: bool = False
    #: the guard and the output filter built here (not passed in), closed with the gateway
    owned_safety: list[PromptGuard | OutputFilter] = field(default_factory=list)
    #: the guard reads the cache's prompt vectors (one encoding) only when both use the
    #: same encoder; otherwise each encodes the prompt itself
    guard_uses_cache_vectors: bool = False

    @classmethod
    def from_config(
        cls,
        config: GatewayConfig,
        *,
        home: Path | None = None,
        backends: Mapping[str, Backend] | None = None,
        guard: PromptGuard | None = None,
        output_filter: OutputFilter | None = None,
        cache: object | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Gateway:
        """Build every part; parts passed in are used as they are (and not closed here)."""
        folder = llm_home(home)
        keys = resolve_keys(config.auth, None if environ is None else dict(environ))
        metrics = GatewayMetrics()
        carbon = CarbonModel.for_country(
            config.carbon.country_iso_code, watts_per_core=config.carbon.cpu_watts_per_core
        )
        given = dict(backends or {})
        missing = {n: b for n, b in config.backends.items() if n not in given}
        owned: list[Backend] = []
        if missing:
            built = build_backends(
                config.model_copy(update={"backends": missing}), models_dir=folder / "models"
            )
            owned = list(built.values())
            given.update(built)
        routing = config.routing
        router = Router(
            {route.name: [(b, given[b]) for b in route.backends] for route in config.models},
            on_fallback=lambda model, backend: metrics.fallbacks.labels(model, backend).inc(),
            cooldowns=Cooldowns(
                after=routing.cooldown_after_failures,
                seconds=routing.cooldown_seconds,
                on_cool_down=lambda backend: metrics.cooldowns.labels(backend).inc(),
            )
            if routing.cooldown_after_failures
            else None,
        )
        owned_safety: list[PromptGuard | OutputFilter] = []
        if config.safety.enabled:
            # no entity types: the guard and the filter look for no personal data
            safety = config.safety
            entities, allow, toxicity = safety.pii_entities, safety.pii_allow, safety.toxicity
            if guard is None:
                guard = PromptGuard(
                    threshold=safety.input_threshold, pii_entities=entities, pii_allow=allow, toxicity=toxicity
                )
                owned_safety.append(guard)
            if output_filter is None:
                output_filter = OutputFilter(
                    threshold=safety.output_threshold, pii_entities=entities, pii_allow=allow, toxicity=toxicity
                )
                owned_safety.append(output_filter)
        else:
            guard, output_filter = None, None
        semantic_cache = cache
        if config.cache.enabled and semantic_cache is None:
            from govml.llm.cache import SemanticCache
            from govml.llm.cache.semantic import DEFAULT_TOKEN_THRESHOLD
            from govml.llm.embedding import get_embedder

            semantic_cache = SemanticCache(
                config.cache.directory or folder / "cache",
                embedder=get_embedder(config.cache.embedder),
                threshold=config.cache.threshold,  # None: the cache's measured default
                token_threshold=(config.cache.token_threshold or DEFAULT_TOKEN_THRESHOLD)
                if config.cache.token_check
                else None,
                ttl_seconds=config.cache.ttl_seconds,
                max_entries=config.cache.max_entries,
                cache_sampled=config.cache.cache_sampled,
                storage_url=config.storage_url,
            )
        request_log = None
        if config.request_log.enabled:
            request_log = RequestLog(
                config.storage_url or folder / "requests.db",
                store_text=config.request_log.store_text,
                on_drop=metrics.log_dropped.inc,
            )
        return cls(
            config=config,
            keys=keys,
            router=router,
            safety=SafetySteps(guard, output_filter, config.safety),
            cache=CacheStep(semantic_cache if config.cache.enabled else None, config.cache),  # type: ignore[arg-type]
            budgets=BudgetTracker(),
            metrics=metrics,
            carbon=carbon,
            request_log=request_log,
            owned_backends=owned,
            owns_cache=cache is None and config.cache.enabled,
            owned_safety=owned_safety,
            guard_uses_cache_vectors=_same_encoder(guard, semantic_cache if config.cache.enabled else None),
        )

    def close(self) -> None:
        if self.request_log is not None:
            self.request_log.close()
        if self.owns_cache:
            self.cache.close()
        else:
            self.cache.finish_stores()
        for backend in self.owned_backends:
            backend.close()
        for part in self.owned_safety:
            part.close()
