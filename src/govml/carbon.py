"""Energy and emissions: CodeCarbon's offline tracker per pipeline stage, and grid intensity.

The offline tracker needs no network: it estimates power from the CPU (RAPL where the
kernel exposes it, else the CPU model's TDP) and converts energy with the country's
grid carbon intensity from CodeCarbon's bundled energy-mix table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

from govml.errors import ConfigError
from govml.record import CarbonResult, StageEnergy

if TYPE_CHECKING:
    from codecarbon import OfflineEmissionsTracker


@lru_cache(maxsize=64)
def grid_intensity_g_per_kwh(country_iso_code: str) -> float:
    """Grid carbon intensity (g CO2e per kWh) of a country, from CodeCarbon's bundled data."""
    from codecarbon.input import DataSource

    mix = DataSource().get_global_energy_mix_data()
    code = country_iso_code.upper()
    if code not in mix:
        raise ConfigError(
            f"carbon.country_iso_code {country_iso_code!r} is not in CodeCarbon's energy-mix table; "
            "use an ISO 3166-1 alpha-3 code such as USA, DEU, FRA, GBR"
        )
    return float(mix[code]["carbon_intensity"])


class StageHandle:
    """A stage being measured; ``checkpoint()`` reads its emissions so far (for budgets)."""

    def __init__(self, tracker: object, name: str, *, spent_before_kg: float) -> None:
        self._tracker = tracker
        self.name = name
        self.spent_before_kg = spent_before_kg
        self.energy_kwh = 0.0
        self.emissions_kg = 0.0
        self.duration_s = 0.0
        self._started = 0.0

    def _begin(self) -> None:
        self._started = time.perf_counter()
        self._tracker.start_task(self.name)  # type: ignore[attr-defined]

    def _end(self) -> None:
        # CodeCarbon reports a task's figures only when it stops, so a checkpoint stops
        # the task and starts a new one under the same name.
        data = self._tracker.stop_task()  # type: ignore[attr-defined]
        self.energy_kwh += float(data.energy_consumed)
        self.emissions_kg += float(data.emissions)
        self.duration_s += time.perf_counter() - self._started

    def checkpoint(self) -> float:
        """Total emissions of the run so far, this stage included, in kg CO2e."""
        self._end()
        self._begin()
        return self.spent_before_kg + self.emissions_kg


class CarbonMeter:
    """Measures energy and emissions of named stages with one CodeCarbon tracker."""

    def __init__(self, country_iso_code: str, *, budget_kg: float | None = None) -> None:
        grid_intensity_g_per_kwh(country_iso_code)  # fail early on an unknown country
        self.country_iso_code = country_iso_code.upper()
        self.budget_kg = budget_kg
        self._stages: list[StageEnergy] = []
        self._tracker: OfflineEmissionsTracker | None = None
        self._budget_exhausted = False

    def start(self) -> None:
        from codecarbon import OfflineEmissionsTracker

        # CodeCarbon logs at INFO on its own logger; keep the terminal for govml's summary.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tracker = OfflineEmissionsTracker(
            country_iso_code=self.country_iso_code,
            save_to_file=False,
            log_level="error",
            measure_power_secs=5,
            tracking_mode="process",
            allow_multiple_runs=True,
        )
        self._tracker.start()

    def stop(self) -> None:
        if self._tracker is not None:
            self._tracker.stop()
            self._tracker = None

    @contextmanager
    def stage(self, name: str) -> Iterator[StageHandle]:
        """Measure the body as one stage; nested stages are not supported."""
        if self._tracker is None:
            raise RuntimeError("CarbonMeter.start() must be called before stage()")
        handle = StageHandle(self._tracker, name, spent_before_kg=self.spent_kg())
        handle._begin()
        try:
            yield handle
        finally:
            handle._end()
            self._stages.append(
                StageEnergy(
                    stage=name,
                    duration_s=handle.duration_s,
                    energy_kwh=handle.energy_kwh,
                    emissions_kg=handle.emissions_kg,
                )
            )

    def spent_kg(self) -> float:
        return sum(s.emissions_kg for s in self._stages)

    def mark_budget_exhausted(self) -> None:
        self._budget_exhausted = True

    def result(self) -> CarbonResult:
        return CarbonResult(
            country_iso_code=self.country_iso_code,
            energy_kwh=sum(s.energy_kwh for s in self._stages),
            emissions_kg=self.spent_kg(),
            stages=list(self._stages),
            budget_kg=self.budget_kg,
            budget_exhausted=self._budget_exhausted,
        )
