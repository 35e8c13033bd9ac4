"""Carbon per request, the request log's writer thread, and per-key budgets."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from govml.errors import ConfigError
from govml.llm.budgets import BudgetExceeded, BudgetTracker
from govml.llm.config import Budget, KeyEntry
from govml.llm.monitoring import CarbonModel, CpuClock, GatewayMetrics, grid_g_per_kwh
from govml.llm.request_log import RequestLog, RequestRecord, text_hash


def test_carbon_is_cpu_seconds_times_power_times_grid() -> None:
    france, poland = CarbonModel.for_country("FRA"), CarbonModel.for_country("pol")
    assert 20 < france.grid_g_per_kwh < poland.grid_g_per_kwh  # nuclear vs coal
    assert france.watts_per_core == 4.0  # CodeCarbon's figure for an unknown CPU
    # one CPU-hour at 4 W is 4 Wh
    assert france.grams(3600) == pytest.approx(0.004 * france.grid_g_per_kwh)
    assert CarbonModel.for_country("FRA", watts_per_core=10).grams(3600) == pytest.approx(
        0.010 * grid_g_per_kwh("FRA")
    )


def test_unknown_country_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ISO 3166-1 alpha-3"):
        CarbonModel.for_country("XYZ")


def test_cpu_clock_counts_work_not_sleep() -> None:
    clock = CpuClock()
    with clock.timed():
        time.sleep(0.2)
    idle = clock.seconds
    with clock.timed():
        sum(i * i for i in range(2_000_000))
    assert idle < 0.05 and clock.seconds - idle > 0.01


def test_metrics_have_their_own_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()  # no "duplicated timeseries" error
    first.requests.labels("m", "ok").inc()
    assert (
        first.registry.get_sample_value("govml_llm_requests_total", {"model": "m", "outcome": "ok"})
        == 1
    )
    assert (
        second.registry.get_sample_value(
            "govml_llm_requests_total", {"model": "m", "outcome": "ok"}
        )
        is None
    )


def record(i: int, **fields: object) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}",
        created=time.time(),
        tenant="t",
        model="m",
        status_code=200,
        outcome="ok",
        prompt=f"question {i}",
        answer="answer",
        **fields,
    )


@pytest.mark.parametrize("store_text", [False, True])
def test_request_log_writes_batches_off_the_caller(tmp_path: Path, store_text: bool) -> None:
    log = RequestLog(tmp_path / "requests.db", store_text=store_text)
    started = time.perf_counter()
    for i in range(500):
        assert log.write(record(i, categories=["pii"]))
    assert time.perf_counter() - started < 1.0  # queued, not written inline
    log.close()
    with sqlite3.connect(tmp_path / "requests.db") as db:
        rows = db.execute(
            "SELECT prompt_sha256, prompt_text, categories FROM requests ORDER BY created"
        ).fetchall()
    assert len(rows) == 500
    assert rows[0][0] == text_hash(rows[0][1] if store_text else "question 0")
    assert (rows[0][1] is not None) == store_text and rows[0][2] == '["pii"]'


def test_request_log_drops_rather_than_blocks_when_full(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = RequestLog(tmp_path / "requests.db", max_queue=1, on_drop=lambda: dropped.append(1))
    results = [log.write(record(i)) for i in range(200)]
    log.close()
    assert all(results) or dropped  # a full queue drops and counts
    assert len(dropped) == results.count(False)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(**budget: int) -> KeyEntry:
    return KeyEntry(sha256="a" * 64, tenant="team", budget=Budget(**budget))


def test_requests_per_minute_slide() -> None:
    clock = Clock(1_000_000.0)
    tracker, entry = BudgetTracker(clock=clock), key(requests_per_minute=2)
    tracker.admit(entry)
    clock.now += 10
    tracker.admit(entry)
    with pytest.raises(BudgetExceeded) as refused:
        tracker.admit(entry)
    assert refused.value.retry_after == 50
    clock.now += 50
    tracker.admit(entry)  # the first request left the window


def test_tokens_per_day_reset_at_utc_midnight() -> None:
    clock = Clock(86_400 * 20_000 + 86_000)  # 400 s before midnight UTC
    tracker, entry = BudgetTracker(clock=clock), key(tokens_per_day=100)
    tracker.admit(entry)
    tracker.charge(entry, 120)
    with pytest.raises(BudgetExceeded, match="tokens for today") as refused:
        tracker.admit(entry)
    assert refused.value.retry_after == 400
    clock.now += 400
    tracker.admit(entry)
    assert tracker.tokens_today(entry) == 0
