"""schemathesis over the server's own OpenAPI schema: positive and negative cases, no 5xx."""

from __future__ import annotations

from typing import TYPE_CHECKING

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

if TYPE_CHECKING:
    from conftest import RunningServer

EXAMPLES_PER_OPERATION = 15


def test_no_server_errors(server: RunningServer) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:  # type: ignore[no-untyped-def]
                response = case.call(base_url=server.url, timeout=30)
                path = operation.path  # noqa: B023 (run is called below, in this same iteration)
                statuses.setdefault(f"{case.method} {path}", set()).add(response.status_code)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                    )

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid in an operation without inputs
                assert mode is GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:10])
    assert any(400 <= s < 500 for s in statuses["POST /invocations"])  # bad bodies were really sent
    assert 200 in statuses["GET /v2/health/live"]
    assert schemathesis.openapi.from_url(f"{server.url}/openapi.json")  # the server is still up
