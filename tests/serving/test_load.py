"""A bounded load test: thousands of requests over keep-alive connections, zero errors."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from conftest import AdultData, RunningServer

REQUESTS = 2000
CONNECTIONS = 4
TIME_LIMIT_S = 120.0


def test_thousands_of_requests_without_errors(server: RunningServer, adult: AdultData) -> None:
    rows = json.loads(adult.test_X.head(200).to_json(orient="records"))
    bodies = [json.dumps({"dataframe_records": [row]}).encode() for row in rows]
    bodies.append(json.dumps({"dataframe_records": rows[:50]}).encode())

    def worker(offset: int) -> tuple[int, int]:
        ok = errors = 0
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(offset, REQUESTS, CONNECTIONS):
                response = client.post("/invocations", content=bodies[i % len(bodies)],
                                       headers={"content-type": "application/json"})
                if response.status_code == 200 and "predictions" in response.json():
                    ok += 1
                else:
                    errors += 1
        return ok, errors

    start = time.monotonic()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        results = list(pool.map(worker, range(CONNECTIONS)))
    elapsed = time.monotonic() - start
    assert sum(e for _, e in results) == 0
    assert sum(o for o, _ in results) == REQUESTS
    assert elapsed < TIME_LIMIT_S
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'govml_requests_total{{endpoint="invocations",status="200"}} {float(REQUESTS)}' in metrics
