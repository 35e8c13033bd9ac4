"""The gateway's request log, the serving prediction log and whole gateway replicas on a
real PostgreSQL server; malformed storage URLs refused with a clear message."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import openai
import psycopg
import pytest

from govml.errors import ConfigError
from govml.llm.config import parse_gateway_config
from govml.llm.request_log import RequestLog, RequestRecord, text_hash
from govml.serving.monitoring import LogRecord, PredictionLog, ServingMetrics, read_logged_inputs
from govml.serving.validation import ValidatedBatch
from tests.llm.live import ALICE, BOB, gateway_yaml, make_upstream, running_gateway, serve
from tests.scale.test_storage import postgres_url


def fresh_database(server, name: str) -> str:  # type: ignore[no-untyped-def]
    url = postgres_url(server, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS requests, predictions, entries, scopes")
    return url


def request_record(i: int, **fields: object) -> RequestRecord:
    values: dict[str, object] = {
        "request_id": f"r{i}",
        "created": time.time(),
        "tenant": "t",
        "model": "m",
        "status_code": 200,
        "outcome": "ok",
        "prompt": f"question {i}",
        "answer": "answer",
    }
    return RequestRecord(**{**values, **fields})  # type: ignore[arg-type]


def test_request_log_on_postgres(postgres) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database(postgres, "request_log")
    log = RequestLog(url, store_text=True)
    for i in range(300):
        assert log.write(request_record(i, categories=["pii"], cache_similarity=0.93))
    log.write(request_record(0, status_code=502, outcome="backend_error"))  # same id: the row is replaced
    log.close()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT request_id, status_code, prompt_sha256, prompt_text, categories, cache_similarity, created"
            " FROM requests ORDER BY request_id"
        ).fetchall()
    assert len(rows) == 300
    first = rows[0]
    assert first[:5] == ("r0", 502, text_hash("question 0"), "question 0", "[]")
    assert rows[1][4] == '["pii"]' and rows[1][5] == 0.93
    assert abs(first[6] - time.time()) < 60  # a 64-bit timestamp, not PostgreSQL's 32-bit REAL


def _batch(ages: list[float]) -> ValidatedBatch:
    columns = {"age": np.array(ages, dtype=float), "job": np.array(["a"] * len(ages), dtype=object)}
    return ValidatedBatch(columns=columns, kinds={"age": "integer", "job": "categorical"}, n_rows=len(ages))


def test_two_servers_share_the_prediction_log(postgres) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database(postgres, "prediction_log")
    logs = [
        PredictionLog(
            url, model="adult", version="3", metrics=ServingMetrics("adult"), reference=None, flush_seconds=0.05
        )
        for _ in range(2)
    ]
    for replica, log in enumerate(logs):
        log.start()
        ages = [20.0 + replica, 30.0 + replica]
        log.submit(
            LogRecord(
                ts=time.time(),
                endpoint="invocations",
                inputs=_batch(ages),
                labels=np.array([0, 1]),
                probabilities=np.array([[0.8, 0.2], [0.3, 0.7]]),
                latency_ms=1.5,
            )
        )
    for log in logs:
        log.close()
        assert log.metrics.log_written._value.get() == 2
    frame = read_logged_inputs(url, "adult")
    assert sorted(frame["age"].tolist()) == [20, 21, 30, 31]
    with psycopg.connect(url) as conn:
        predictions = conn.execute("SELECT prediction FROM predictions ORDER BY id").fetchall()
    assert predictions[0][0] == '{"label":0,"proba":[0.8,0.2]}'
    with pytest.raises(Exception, match="holds no rows"):
        read_logged_inputs(url, "other-model")


def _logged(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT cache_status FROM requests ORDER BY created")]


def _entries(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM entries").fetchone()
    return int(row[0]) if row else 0


def test_two_gateways_share_cache_and_request_log(postgres, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database(postgres, "gateways")
    upstream = make_upstream("alpha")
    with serve(upstream) as upstream_url:
        raw = gateway_yaml({"alpha": upstream_url}, safety={"enabled": False}, storage_url=url)
        with (
            running_gateway(raw, tmp_path / "replica-1") as (one, _),
            running_gateway(raw, tmp_path / "replica-2") as (two, _),
        ):

            def ask(gateway: str, key: str, question: str) -> str:
                client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)
                response = client.chat.completions.with_raw_response.create(
                    model="alpha", messages=[{"role": "user", "content": question}], temperature=0
                )
                return response.headers["x-govml-cache"]

            assert ask(one, ALICE, "How many legs does a spider have?") == "miss"
            calls = upstream.state.calls
            # a replica stores its answer after responding: the other sees it once written
            deadline = time.monotonic() + 10
            while _entries(url) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ask(two, ALICE, "How many legs do spiders have?") == "hit"
            assert ask(two, BOB, "How many legs does a spider have?") == "miss"  # another tenant
            assert upstream.state.calls == calls + 1
            deadline = time.monotonic() + 10
            while len(_logged(url)) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)  # the request log writes off the request path
            assert _logged(url) == ["miss", "hit", "miss"]

            # the database drops every connection (a restart): answers go on, without the cache...
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            assert ask(two, ALICE, "How many legs do spiders have?") == "bypass"
            # ...and the next request reconnects
            assert ask(two, ALICE, "How many legs do spiders have?") == "hit"
    assert not (tmp_path / "replica-1" / "llm" / "requests.db").exists()
    assert _entries(url) == 2
    assert _logged(url)[3:] == ["bypass", "hit"]  # the request log reconnected and lost nothing


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://db/govml", "expected postgresql://"), ("postgresql://db:5432", "name the database")],
)
def test_gateway_yaml_with_a_bad_storage_url(url: str, message: str) -> None:
    raw = gateway_yaml({"alpha": "http://127.0.0.1:1"}, storage_url=url)
    with pytest.raises(ConfigError, match=f"storage_url: .*{message}"):
        parse_gateway_config(raw, source=Path("gateway.yaml"))


def test_gateway_yaml_sqlite_url_is_resolved_against_the_file(tmp_path: Path) -> None:
    raw = gateway_yaml({"alpha": "http://127.0.0.1:1"}, storage_url="sqlite:///state/gateway.db")
    config = parse_gateway_config(raw, source=tmp_path / "gateway.yaml", base=tmp_path)
    assert config.storage_url == f"sqlite:///{tmp_path / 'state' / 'gateway.db'}"


@pytest.mark.parametrize("command", ["serve", "monitor"])
def test_cli_refuses_a_bad_log_url(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from govml.cli import main

    monkeypatch.setenv("GOVML_HOME", str(tmp_path))
    monkeypatch.setenv("GOVML_PREDICTION_LOG_URL", "postgresql://db:notaport/govml")
    monkeypatch.setattr(sys, "argv", ["govml", command, "adult@champion"])
    with pytest.raises(SystemExit) as stop:
        main()
    output = " ".join(capsys.readouterr().err.split())
    assert stop.value.code == 2
    assert "storage URL 'postgresql://db:notaport/govml'" in output
