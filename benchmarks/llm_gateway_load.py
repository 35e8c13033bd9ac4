"""The LLM gateway under concurrent clients: throughput, latency and errors of cache
misses and hits with 1, 4 and 16 clients at once.

    .venv/bin/python benchmarks/llm_gateway_load.py
    .venv/bin/python benchmarks/llm_gateway_load.py --clients 1 4 16 --requests 160 \\
        --upstream-delay 0.3 --json out.json

Three processes share this machine's cores: a stub OpenAI-compatible upstream
(``tests/llm/live.py``'s echo server, each answer held back ``--upstream-delay`` seconds,
a remote model's time), ``govml llm serve`` on a gateway.yaml written here (guard, cache,
output filter and request log on, their defaults), and this load generator (httpx on
asyncio). Every request is either a question asked in the warm-up (a hit) or one never
asked (a miss), half and half in a fixed shuffled order; the cache status reported by
the gateway decides which it was. Bounded: ``--requests`` per level, ``--timeout`` per
request, every server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import llm_gateway  # benchmarks/ is on the path when this file runs
import psutil

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT.parent / "shared" / "data" / "llm" / "paraphrase_pairs.json"
KEY = "sk-load"
MODEL = "echo"

_UPSTREAM = """
import sys, uvicorn
sys.path.insert(0, {root!r})
from tests.llm.live import make_upstream
app = make_upstream("upstream")
app.state.delay_seconds = {delay!r}
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(values: list[float]) -> dict[str, float] | None:
    return llm_gateway._percentiles(values) if values else None


def _wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


@contextmanager
def _process(args: list[str], env: dict[str, str], ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(ready_url, process, seconds=120)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def _gateway_yaml(upstream_url: str, toxicity: str) -> dict[str, Any]:
    return {
        "models": [{"name": MODEL, "backends": ["upstream"], "max_tokens": 64}],
        "backends": {
            "upstream": {"type": "openai", "base_url": f"{upstream_url}/v1", "timeout_seconds": 30}
        },
        # the budgets are not what is measured here
        "auth": {"default_budget": {"tokens_per_day": 10**9, "requests_per_minute": 10**6}},
        "carbon": {"country_iso_code": "FRA"},
        "safety": {"toxicity": toxicity},
    }


async def _ask(client: httpx.AsyncClient, prompt: str, timeout: float) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "temperature": 0,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
    }
    started = time.perf_counter()
    try:
        response = await client.post("/chat/completions", json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        return {"status": type(exc).__name__, "ms": (time.perf_counter() - started) * 1000}
    elapsed = (time.perf_counter() - started) * 1000
    out: dict[str, Any] = {"status": response.status_code, "ms": elapsed}
    if response.status_code != 200:  # e.g. 400 content_filter: the guard refused the prompt
        error = response.json().get("error") or {}
        out["status"] = f"{response.status_code} {error.get('code') or error.get('type')}"
    else:
        govml = response.json()["govml"]
        out["cache"] = govml["cache"]["status"]
        out["overhead_ms"] = govml["overhead_ms"]
    return out


async def _level(url: str, prompts: list[str], clients: int, timeout: float) -> list[dict[str, Any]]:
    """``prompts`` asked by ``clients`` workers taking the next prompt as they finish."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"{url}/v1", headers={"Authorization": f"Bearer {KEY}"}, limits=limits
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                results.append(await _ask(client, queue.get_nowait(), timeout))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return results


def _summary(results: list[dict[str, Any]], wall: float, cpu_seconds: float) -> dict[str, Any]:
    ok = [r for r in results if "cache" in r]
    by_cache = {s: [r["ms"] for r in ok if r["cache"] == s] for s in ("hit", "miss")}
    return {
        "requests": len(results),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 1),
        "statuses": dict(Counter(str(r["status"]) for r in results)),
        "cache": dict(Counter(r["cache"] for r in ok)),
        "miss_latency": _percentiles(by_cache["miss"]),
        "hit_latency": _percentiles(by_cache["hit"]),
        "gateway_overhead": _percentiles([r["overhead_ms"] for r in ok]),
        "gateway_cpu_ms_per_request": round(cpu_seconds * 1000 / max(1, len(results)), 1),
    }


def measure(
    *,
    clients: list[int],
    requests: int,
    upstream_delay: float,
    timeout: float,
    warm: int = 40,
    toxicity: str = "lexical",
) -> dict[str, Any]:
    origins = list(dict.fromkeys(p["origin"] for p in json.loads(PAIRS.read_text("utf-8"))))
    rng = random.Random(0)
    rng.shuffle(origins)
    asked, fresh = origins[:warm], iter(origins[warm:])
    up_port, gw_port = _free_port(), _free_port()
    upstream_url, gateway_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{gw_port}"
    levels: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="govml-load-") as home:
        config = Path(home) / "gateway.yaml"
        config.write_text(json.dumps(_gateway_yaml(upstream_url, toxicity)), encoding="utf-8")
        env = {**os.environ, "GOVML_HOME": home, "GOVML_API_KEYS": KEY, "TQDM_DISABLE": "1"}
        upstream_code = _UPSTREAM.format(root=str(ROOT), delay=upstream_delay, port=up_port)
        gateway_cmd = [sys.executable, "-m", "govml", "llm", "serve", str(config), "--port", str(gw_port)]
        with (
            _process([sys.executable, "-c", upstream_code], env, f"{upstream_url}/v1/models"),
            _process(gateway_cmd, env, f"{gateway_url}/health") as gateway,
        ):
            asyncio.run(_level(gateway_url, asked, 1, timeout))  # loads the guard; fills the cache
            gateway_process = psutil.Process(gateway.pid)
            for count in clients:
                half = requests // 2
                prompts = [rng.choice(asked) for _ in range(requests - half)]
                prompts += [next(fresh) for _ in range(half)]
                rng.shuffle(prompts)
                cpu_before = sum(gateway_process.cpu_times()[:2])
                started = time.perf_counter()
                results = asyncio.run(_level(gateway_url, prompts, count, timeout))
                wall = time.perf_counter() - started
                cpu = sum(gateway_process.cpu_times()[:2]) - cpu_before
                levels[str(count)] = _summary(results, wall, cpu)
            metrics = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    return {
        "upstream_delay_s": upstream_delay,
        "toxicity": toxicity,
        "requests_per_level": requests,
        "levels": levels,
        "metrics_served": "govml_llm_requests_total" in metrics,
        "cpu_count": os.cpu_count(),
    }


def _print(figures: dict[str, Any]) -> None:
    print(
        f"gateway under load: upstream answers after {figures['upstream_delay_s']} s, "
        f"{figures['requests_per_level']} requests per level, half new questions, half asked before;"
        f" toxic language scored by the {figures['toxicity']} model"
    )
    head = (
        f"{'clients':>7} {'req/s':>6} {'statuses':>24} {'miss p50/p99 ms':>17} {'hit p50/p99 ms':>16}"
        f" {'overhead p50/p99':>17} {'CPU ms/req':>10}"
    )
    print(head)
    for clients, level in figures["levels"].items():

        def pair(value: dict[str, float] | None) -> str:
            return "-" if value is None else f"{value['p50_ms']:.0f} / {value['p99_ms']:.0f}"

        statuses = ",".join(f"{k}:{v}" for k, v in sorted(level["statuses"].items()))
        print(
            f"{clients:>7} {level['requests_per_s']:>6} {statuses:>24} {pair(level['miss_latency']):>17}"
            f" {pair(level['hit_latency']):>16} {pair(level['gateway_overhead']):>17}"
            f" {level['gateway_cpu_ms_per_request']:>10}"
        )
    print(f"load average now: {os.getloadavg()[0]:.1f} on {figures['cpu_count']} cores")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=160, help="per level")
    parser.add_argument("--upstream-delay", type=float, default=0.3)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--toxicity", choices=["lexical", "embedding"], default="lexical", help="safety.toxicity")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = measure(
        clients=args.clients,
        requests=args.requests,
        upstream_delay=args.upstream_delay,
        timeout=args.timeout,
        toxicity=args.toxicity,
    )
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
