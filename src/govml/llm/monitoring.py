"""What the gateway measures: Prometheus metrics (one registry per app) and carbon.

Carbon per request = CPU seconds spent on the request in this process
x watts per busy core x grid intensity of the configured country:

- watts per core: ``carbon.cpu_watts_per_core`` from the YAML, else CodeCarbon's
  ``DEFAULT_POWER_PER_CORE`` (4 W per thread, what CodeCarbon assumes for a CPU
  missing from its power table, as this machine's "Intel Xeon Processor" is);
- grid intensity: ``carbon_intensity`` (g CO2e/kWh) of the ISO 3166-1 alpha-3 country
  in CodeCarbon's bundled ``data/private_infra/global_energy_mix.json`` (Our World in
  Data / Ember figures), read offline from the installed package.

A remote upstream's energy is not visible from here: its requests count only the
gateway's own CPU time.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from govml.errors import ConfigError

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
_JOULES_PER_KWH = 3.6e6


@lru_cache(maxsize=1)
def _energy_mix() -> dict[str, dict[str, object]]:
    # read the file, not ``codecarbon.input``: importing codecarbon costs about a second
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("carbon figures need CodeCarbon's data: `pip install codecarbon`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / "data" / "private_infra" / "global_energy_mix.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def grid_g_per_kwh(country_iso_code: str) -> float:
    """Grid carbon intensity of a country (g CO2e per kWh) from CodeCarbon's data."""
    mix = _energy_mix().get(country_iso_code.upper())
    if mix is None:
        raise ConfigError(
            f"carbon.country_iso_code {country_iso_code!r} is not in CodeCarbon's energy-mix "
            "table; use an ISO 3166-1 alpha-3 code such as USA, FRA, DEU, GBR"
        )
    return float(mix["carbon_intensity"])  # type: ignore[arg-type]


def default_watts_per_core() -> float:
    """CodeCarbon's power figure for one busy thread of an unknown CPU."""
    try:
        from codecarbon.core.cpu import DEFAULT_POWER_PER_CORE
    except ImportError:  # the figure CodeCarbon 2.x and 3.x ship
        return 4.0
    return float(DEFAULT_POWER_PER_CORE)


@dataclass(frozen=True)
class CarbonModel:
    """Turns CPU seconds into grams of CO2e."""

    country_iso_code: str
    watts_per_core: float
    grid_g_per_kwh: float

    @classmethod
    def for_country(
        cls, country_iso_code: str, *, watts_per_core: float | None = None
    ) -> CarbonModel:
        return cls(
            country_iso_code=country_iso_code.upper(),
            watts_per_core=watts_per_core
            if watts_per_core is not None
            else default_watts_per_core(),
            grid_g_per_kwh=grid_g_per_kwh(country_iso_code),
        )

    def grams(self, cpu_seconds: float) -> float:
        return cpu_seconds * self.watts_per_core / _JOULES_PER_KWH * self.grid_g_per_kwh


class CpuClock:
    """Accumulates the process's CPU time over the timed blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        started = time.process_time()
        try:
            yield
        finally:
            self.seconds += time.process_time() - started


class GatewayMetrics:
    """The gateway's Prometheus metrics, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "govml_llm_requests",
            "Chat requests by model and outcome.",
            ["model", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "govml_llm_request_latency_seconds",
            "End-to-end latency.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "govml_llm_time_to_first_token_seconds",
            "Time to the first streamed token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "govml_llm_gateway_overhead_seconds",
            "Guard + cache + output filter time.",
            ["model"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "govml_llm_tokens",
            "Tokens by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "govml_llm_generation_tokens_per_second",
            "Completion tokens per second of generation.",
            ["model", "backend"],
            buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320),
            registry=r,
        )
        self.cache = Counter(
            "govml_llm_cache",
            "Cache lookups by status (hit, miss, bypass).",
            ["model", "status"],
            registry=r,
        )
        self.safety = Counter(
            "govml_llm_safety_actions",
            "Safety decisions by stage (input, output) and action.",
            ["model", "stage", "action"],
            registry=r,
        )
        self.fallbacks = Counter(
            "govml_llm_backend_failures",
            "Backend failures that led to a fallback or an error.",
            ["model", "backend"],
            registry=r,
        )
        self.cooldowns = Counter(
            "govml_llm_backend_cooldowns",
            "Times a backend was set aside after failing repeatedly in a row.",
            ["backend"],
            registry=r,
        )
        self.carbon = Counter(
            "govml_llm_carbon_grams", "Estimated emissions, grams CO2e.", ["model"], registry=r
        )
        self.log_dropped = Counter(
            "govml_llm_request_log_dropped", "Request-log records dropped (queue full).", registry=r
        )
