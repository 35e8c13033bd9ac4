"""The LLM gateway's figures in one run: its own overhead next to calling the backend
directly, a cache hit end to end, the local model's tokens/s, and the cache and safety
figures of benchmarks/llm_cache.py and benchmarks/llm_guard.py.

    .venv/bin/python benchmarks/llm_gateway.py                  # everything
    .venv/bin/python benchmarks/llm_gateway.py --requests 20 --skip-cache --skip-guard
    .venv/bin/python benchmarks/llm_gateway.py --json out.json

The gateway runs in this process under uvicorn on 127.0.0.1 with the shipped guard,
output filter and semantic cache, in front of the local SmolLM2-135M-Instruct; requests
go over HTTP with httpx. Prompts are the first questions of
``shared/data/llm/paraphrase_pairs.json`` (asked with temperature 0, so cacheable).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent
PAIRS = ROOT.parents[1] / "shared" / "data" / "llm" / "paraphrase_pairs.json"
KEY = "sk-benchmark"


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {
        "p50_ms": round(float(np.percentile(array, 50)), 2),
        "p99_ms": round(float(np.percentile(array, 99)), 2),
        "n": len(values),
    }


def _prompts(n: int) -> list[str]:
    pairs = json.loads(PAIRS.read_text(encoding="utf-8"))
    seen: list[str] = []
    for pair in pairs:
        if pair["origin"] not in seen:
            seen.append(pair["origin"])
        if len(seen) == n:
            break
    return seen


def _sibling(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_backend(engine: str) -> tuple[Any, float]:
    """The local SmolLM2 backend on ``engine`` and its load time in seconds."""
    from govml.llm.backends.local import build_local_backend
    from govml.llm.config import LocalBackendConfig
    from govml.llm.gateway import llm_home

    started = time.perf_counter()
    backend = build_local_backend(
        engine, LocalBackendConfig(type="local", engine=engine), models_dir=llm_home() / "models"
    )
    return backend, time.perf_counter() - started


def _call_directly(backend: Any, prompt: str, max_tokens: int) -> tuple[float, float]:
    """One completion straight from the backend: (latency ms, completion tokens/s)."""
    from govml.llm.backends import ChatMessage, GenerationRequest

    request = GenerationRequest(
        model="local", messages=(ChatMessage("user", prompt),), max_tokens=max_tokens
    )
    t0 = time.perf_counter()
    answer = backend.complete(request)
    elapsed = time.perf_counter() - t0
    return elapsed * 1000, answer.usage.completion_tokens / elapsed


def _local_model_figures(
    engine: str, load_seconds: float, calls: list[tuple[float, float]]
) -> dict[str, Any]:
    return {
        "engine": engine,
        "load_seconds": round(load_seconds, 1),
        "tokens_per_second_median": round(statistics.median(rate for _, rate in calls), 1),
        "direct_latency": _percentiles([ms for ms, _ in calls]),
    }


def measure_tokens_per_second(
    engine: str, prompts: list[str], *, max_tokens: int
) -> dict[str, Any]:
    """Decode speed of the local model on ``engine`` (completion tokens / wall time)."""
    backend, load_seconds = _load_backend(engine)
    calls = [_call_directly(backend, prompt, max_tokens) for prompt in prompts]
    return {**_local_model_figures(engine, load_seconds, calls), "backend": backend}


def guard_reference(prompts: list[str], *, rounds: int = 3) -> dict[str, Any]:
    """The machine's speed, as the prompt guard alone on ``prompts`` (p50 of ``rounds``
    passes): the overhead moves with it (19.9 to 33.9 ms in one morning, docs/llm-gateway.md),
    so a run's overhead is read next to this figure."""
    from govml.llm.safety import PromptGuard

    guard = PromptGuard()
    try:
        guard.check_batch(prompts[:3])  # load the head, the encoder and spaCy
        timings = []
        for _ in range(rounds):
            for prompt in prompts:
                t0 = time.perf_counter()
                guard.check_batch([prompt])
                timings.append((time.perf_counter() - t0) * 1000)
    finally:
        guard.close()
    return _percentiles(timings)


def measure_gateway(
    *,
    requests: int = 30,
    max_tokens: int = 24,
    engine: str = "auto",
    guard_head: Path | None = None,
) -> dict[str, Any]:
    """Each prompt straight to the backend and then through the gateway (a miss), in
    turn, so both meet the machine at the same speed; then every prompt again (cache
    hits). The gateway's overhead is the guard + cache + filter time it reports."""
    from govml.llm.app import create_app
    from govml.llm.backends.local import resolve_engine
    from govml.llm.background import serve_in_background
    from govml.llm.config import parse_gateway_config
    from govml.llm.gateway import Gateway

    prompts = _prompts(requests)
    engine = resolve_engine(engine)
    reference = guard_reference(prompts)
    backend, load_seconds = _load_backend(engine)
    raw = {
        "models": [{"name": "smollm2", "backends": ["local"], "max_tokens": max_tokens}],
        "backends": {"local": {"type": "local", "engine": engine}},
        "carbon": {"country_iso_code": "FRA"},
    }
    config = parse_gateway_config(raw, source=Path("benchmark-gateway.yaml"))
    with tempfile.TemporaryDirectory() as home:
        from govml.llm.safety import OutputFilter, PromptGuard

        gateway = Gateway.from_config(
            config,
            home=Path(home),
            backends={"local": backend},
            guard=PromptGuard(head=guard_head),
            output_filter=OutputFilter(head=guard_head),
            environ={"GOVML_API_KEYS": KEY},
        )
        with (
            serve_in_background(create_app(gateway)) as url,
            httpx.Client(
                base_url=f"{url}/v1", headers={"Authorization": f"Bearer {KEY}"}, timeout=120
            ) as client,
        ):

            def ask(prompt: str) -> tuple[float, dict[str, Any]]:
                body = {
                    "model": "smollm2",
                    "temperature": 0,
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": prompt}],
                }
                t0 = time.perf_counter()
                response = client.post("/chat/completions", json=body)
                elapsed = (time.perf_counter() - t0) * 1000
                response.raise_for_status()
                return elapsed, response.json()["govml"]

            ask("Warm up the guard, the cache and the filter.")
            direct: list[tuple[float, float]] = []
            misses: list[tuple[float, dict[str, Any]]] = []
            for prompt in prompts:
                direct.append(_call_directly(backend, prompt, max_tokens))
                misses.append(ask(prompt))
            hits = [ask(p) for p in prompts]
    local_model = _local_model_figures(engine, load_seconds, direct)
    miss_overhead = [g["overhead_ms"] for _, g in misses]
    hit_latency = [ms for ms, g in hits if g["cache"]["status"] == "hit"]
    steps = sorted({name for _, g in misses for name in g["steps_ms"]})
    return {
        "engine": engine,
        "requests": len(prompts),
        "max_tokens": max_tokens,
        "local_model": local_model,
        "machine_reference_guard_alone": reference,
        "backend_direct_latency": local_model["direct_latency"],
        "gateway_latency_miss": _percentiles([ms for ms, _ in misses]),
        "gateway_overhead_guard_cache_filter": _percentiles(miss_overhead),
        "gateway_overhead_cpu": _percentiles([g["overhead_cpu_ms"] for _, g in misses]),
        "gateway_overhead_steps_p50_ms": {
            name: round(statistics.median(g["steps_ms"].get(name, 0.0) for _, g in misses), 2)
            for name in steps
        },
        "cache_hit_end_to_end": _percentiles(hit_latency) if hit_latency else None,
        "cache_hit_overhead": _percentiles([g["overhead_ms"] for _, g in hits]),
        "cache_hit_overhead_cpu": _percentiles([g["overhead_cpu_ms"] for _, g in hits]),
        "cache_hits": f"{len(hit_latency)}/{len(hits)}",
        "carbon_g_per_generated_answer_median": statistics.median(g["carbon_g"] for _, g in misses),
    }


def _print_summary(figures: dict[str, Any]) -> None:
    """The issue's acceptance figures, each next to its target."""
    gw = figures["gateway"]
    over = gw["gateway_overhead_guard_cache_filter"]
    hit = gw["cache_hit_end_to_end"]
    print("\n=== summary (issue 8 targets) ===")
    print(
        f"gateway overhead (guard + cache + filter): p50 {over['p50_ms']:.1f} ms,"
        f" p99 {over['p99_ms']:.1f} ms (target p50 < 20 ms);"
        f" backend direct p50 {gw['backend_direct_latency']['p50_ms']:.0f} ms,"
        f" guard alone p50 {gw['machine_reference_guard_alone']['p50_ms']:.1f} ms"
    )
    if hit:
        print(f"cache hit end to end: p50 {hit['p50_ms']:.1f} ms (target < 30 ms)")
    print(f"local model tokens/s: {gw['local_model']['tokens_per_second_median']}")
    cache = figures.get("cache")
    if cache:
        lk = cache["lookup"]
        print(
            f"cache lookup p99 at {lk['entries']:,} entries: "
            f"{lk['lookup_with_vector']['p99_ms']:.1f} ms (target < 15 ms)"
        )
        if "curve" in cache:
            cv = cache["curve"]
            print(
                f"curve, report part at the default (token check {cv['chosen_token_threshold']}): "
                f"{cv['report_at_chosen_token_threshold']}"
            )
            print(
                f"  token check off (cosine {cv['chosen_threshold']}): {cv['report_at_chosen']};"
                f" target met: {cv['target_met']}"
            )
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--engine", default="auto", choices=["auto", "transformers", "llama_cpp"])
    parser.add_argument(
        "--all-engines", action="store_true", help="tokens/s of every installed engine"
    )
    parser.add_argument("--skip-cache", action="store_true", help="skip benchmarks/llm_cache.py")
    parser.add_argument("--cache-entries", type=int, default=100_000)
    parser.add_argument(
        "--cache-extras",
        action="store_true",
        help="also compare encoders and index kinds (adds ~5 min)",
    )
    parser.add_argument("--skip-guard", action="store_true", help="skip benchmarks/llm_guard.py")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--guard-head", type=Path, help="a guard head (default: the shipped one)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    figures: dict[str, Any] = {
        "gateway": measure_gateway(
            requests=args.requests,
            max_tokens=args.max_tokens,
            engine=args.engine,
            guard_head=args.guard_head,
        )
    }
    if args.all_engines:
        from govml.llm.backends.local import llama_cpp_available

        prompts = _prompts(10)
        engines = ["transformers", *(["llama_cpp"] if llama_cpp_available() else [])]
        figures["engines"] = {}
        for engine in engines:
            result = measure_tokens_per_second(engine, prompts, max_tokens=args.max_tokens)
            result.pop("backend").close()
            figures["engines"][engine] = result
    if not args.skip_cache:
        figures["cache"] = _sibling("llm_cache").measure(
            entries=args.cache_entries, indexes=args.cache_extras, encoders=args.cache_extras
        )
    if not args.skip_guard:
        figures["guard"] = _sibling("llm_guard").measure()

    gw = figures["gateway"]
    print(
        f"local model ({gw['engine']}): {gw['local_model']['tokens_per_second_median']} tokens/s, "
        f"{gw['requests']} prompts, max_tokens {gw['max_tokens']}"
    )
    rows = [
        ("backend called directly", gw["backend_direct_latency"]),
        ("through the gateway (cache miss)", gw["gateway_latency_miss"]),
        ("gateway overhead: guard + cache + filter", gw["gateway_overhead_guard_cache_filter"]),
        ("  the same in CPU time", gw["gateway_overhead_cpu"]),
        ("cache hit, end to end over HTTP", gw["cache_hit_end_to_end"]),
        ("  gateway steps of a hit, CPU time", gw["cache_hit_overhead_cpu"]),
    ]
    print(f"{'':44} {'p50 ms':>10} {'p99 ms':>10}")
    for label, value in rows:
        if value:
            print(f"{label:44} {value['p50_ms']:>10.1f} {value['p99_ms']:>10.1f}")
    print(f"cache hits on the second pass: {gw['cache_hits']}")
    ref = gw["machine_reference_guard_alone"]
    print(
        f"machine reference, the prompt guard alone on the same prompts: p50 {ref['p50_ms']:.1f} ms"
        " (7.2 ms on the fastest machine of 2026-11-29, 13.9 ms on the slowest)"
    )
    print(f"overhead per step, p50 ms: {gw['gateway_overhead_steps_p50_ms']}")
    print(
        f"machine load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for engine, result in figures.get("engines", {}).items():
        print(
            f"engine {engine}: {result['tokens_per_second_median']} tokens/s (load {result['load_seconds']} s)"
        )
    if "cache" in figures:
        print("\n--- semantic cache (benchmarks/llm_cache.py)")
        _sibling("llm_cache")._print(figures["cache"])
    if "guard" in figures:
        print("\n--- safety (benchmarks/llm_guard.py)")
        print(_sibling("llm_guard").render(figures["guard"]))
    _print_summary(figures)
    figures["load_average_1min"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
