"""benchmarks/llm_gateway_load.py runs end to end (slow: starts `govml llm serve` and a
stub upstream as processes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_a_small_load_run_returns_its_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("llm_gateway_load", BENCHMARKS / "llm_gateway_load.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.measure(clients=[1, 3], requests=8, upstream_delay=0.05, timeout=60, warm=4)
    assert figures["metrics_served"]
    for level in figures["levels"].values():
        assert level["requests"] == 8
        assert set(level["statuses"]) <= {"200", "400 content_filter"}
        assert level["statuses"].get("200", 0) >= 6
        assert level["requests_per_s"] > 0 and level["gateway_cpu_ms_per_request"] > 0
    # half the questions were asked in the warm-up: some answered from the cache
    assert sum(level["cache"].get("hit", 0) for level in figures["levels"].values()) >= 4
    assert sum(level["cache"].get("miss", 0) for level in figures["levels"].values()) >= 4
