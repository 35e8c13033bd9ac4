"""benchmarks/llm_cache.py runs end to end and returns its figures (slow: builds indexes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "llm_cache.py"


@pytest.mark.slow
def test_measure_returns_the_figures() -> None:
    spec = importlib.util.spec_from_file_location("llm_cache_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure(entries=3000, encoders=False, quality=False)
    assert set(result["indexes"]) == {"hnswlib", "faiss-flat"}
    assert result["indexes"]["faiss-flat"]["recall_at_1"] == 1.0
    assert result["indexes"]["hnswlib"]["recall_at_1"] > 0.9
    lookup = result["lookup"]
    assert lookup["entries"] == 3000
    assert 0 < lookup["lookup_with_vector"]["p50_ms"] <= lookup["lookup_with_vector"]["p99_ms"]
    assert lookup["lookup_with_vector_token_check_off"]["p50_ms"] > 0
    assert lookup["database_mb"] > 0
