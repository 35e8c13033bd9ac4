"""Bad input, budgets and failing backends, over raw HTTP against a real server: each
gets the right status in OpenAI's error shape, and the gateway keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from govml.llm.config import hash_key
from tests.llm.live import (
    ALICE,
    BOB,
    free_port,
    gateway_yaml,
    make_upstream,
    running_gateway,
    serve,
)

AUTH = {"Authorization": f"Bearer {ALICE}"}
PLAIN = {"safety": {"enabled": False}, "cache": {"enabled": False}}


@pytest.fixture(scope="module")
def alpha() -> Iterator[tuple[str, Any]]:
    app = make_upstream("alpha")
    with serve(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def gateway(alpha, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    dead = f"http://127.0.0.1:{free_port()}"
    raw = gateway_yaml(
        {"alpha": alpha[0], "dead": dead},
        limits={"max_body_bytes": 4096, "max_prompt_chars": 500, "max_messages": 4},
        # every request here meets the dead backend: no cool-down (0), tested on its own below
        routing={"cooldown_after_failures": 0},
        **PLAIN,
    )
    raw["models"].append({"name": "dead-then-alpha", "backends": ["dead", "alpha"]})
    with running_gateway(raw, tmp_path_factory.mktemp("home")) as (url, _):
        yield url


def chat(
    url: str, body: Any, *, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        content=raw if raw is not None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(AUTH if headers is None else headers)},
        timeout=30,
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


def ok_body(model: str = "alpha", content: str = "hello") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize(
    ("raw", "status", "param", "code"),
    [
        (b"{not json", 400, None, None),
        (b"[1, 2]", 400, None, None),
        (json.dumps({"model": "alpha"}).encode(), 400, "messages", None),
        (json.dumps({"model": "alpha", "messages": []}).encode(), 400, "messages", None),
        (
            json.dumps(
                {"model": "alpha", "messages": [{"role": "wizard", "content": "x"}]}
            ).encode(),
            400,
            "messages.0.role",
            None,
        ),
        (json.dumps({**ok_body(), "temperature": 7}).encode(), 400, "temperature", None),
        (json.dumps({**ok_body(), "n": 3}).encode(), 400, "n", None),
        (
            json.dumps(ok_body(content="x" * 600)).encode(),
            400,
            "messages",
            "context_length_exceeded",
        ),
        (
            json.dumps(
                {"model": "alpha", "messages": [{"role": "user", "content": "x"}] * 5}
            ).encode(),
            400,
            "messages",
            None,
        ),
        (json.dumps(ok_body(content="y" * 5000)).encode(), 413, None, None),
        (json.dumps(ok_body(model="nope")).encode(), 404, "model", "model_not_found"),
    ],
)
def test_bad_requests_get_openai_errors(
    gateway: str, raw: bytes, status: int, param: str | None, code: str | None
) -> None:
    response = chat(gateway, None, raw=raw)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["param"] == param and error["code"] == code
    assert chat(gateway, ok_body()).status_code == 200  # still serving


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key"),
        ({"Authorization": "Basic abc"}, "Malformed"),
        ({"Authorization": "Bearer sk-wrong"}, "Incorrect API key"),
    ],
)
def test_keys_are_required(gateway: str, headers: dict[str, str], message: str) -> None:
    response = chat(gateway, ok_body(), headers=headers)
    assert response.status_code == 401 and message in error_of(response)["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_path_is_an_openai_404(gateway: str) -> None:
    response = httpx.get(f"{gateway}/v1/engines", headers=AUTH)
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


def test_down_backend_is_503_and_streams_too(gateway: str) -> None:
    response = chat(gateway, ok_body(model="dead"))
    assert response.status_code == 503
    assert error_of(response)["code"] == "backend_unavailable"
    streamed = chat(gateway, {**ok_body(model="dead"), "stream": True})
    assert streamed.status_code == 503 and error_of(streamed)["type"] == "server_error"
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=ALICE, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**ok_body(model="dead"))
    assert chat(gateway, ok_body()).status_code == 200


def test_fallback_to_the_next_backend(gateway: str) -> None:
    response = chat(gateway, ok_body(model="dead-then-alpha", content="still there?"))
    assert response.status_code == 200
    assert response.headers["x-govml-backend"] == "alpha"
    assert response.json()["choices"][0]["message"]["content"] == "alpha heard: still there?"
    metrics = httpx.get(f"{gateway}/metrics").text
    assert 'govml_llm_backend_failures_total{backend="dead",model="dead-then-alpha"}' in metrics


def test_upstream_going_down_mid_life_then_back(alpha, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_upstream("flaky")
    with serve(app) as flaky:
        raw = gateway_yaml({"flaky": flaky, "alpha": alpha[0]}, **PLAIN)
        raw["models"].append({"name": "flaky-then-alpha", "backends": ["flaky", "alpha"]})
        with running_gateway(raw, tmp_path) as (url, _):
            assert (
                chat(url, ok_body(model="flaky-then-alpha")).headers["x-govml-backend"] == "flaky"
            )
            app.state.fail_status = 500
            fell_back = chat(url, {**ok_body(model="flaky-then-alpha"), "stream": True})
            assert fell_back.status_code == 200 and fell_back.headers["x-govml-backend"] == "alpha"
            assert chat(url, ok_body(model="flaky")).status_code == 503
            app.state.fail_status = 400
            refused = chat(url, ok_body(model="flaky-then-alpha"))
            assert refused.status_code == 400  # the request's fault: no fallback
            app.state.fail_status = None
            assert chat(url, ok_body(model="flaky")).status_code == 200


def test_requests_per_minute_budget(alpha, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = gateway_yaml(
        {"alpha": alpha[0]},
        auth={
            "keys": [
                {"name": "tiny", "sha256": hash_key(ALICE), "budget": {"requests_per_minute": 2}}
            ]
        },
        **PLAIN,
    )
    with running_gateway(raw, tmp_path) as (url, _):
        assert [chat(url, ok_body()).status_code for _ in range(2)] == [200, 200]
        limited = chat(url, ok_body())
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert error_of(limited)["code"] == "rate_limit_exceeded"
        assert chat(url, ok_body(), headers={"Authorization": f"Bearer {BOB}"}).status_code == 200
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=ALICE, max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(**ok_body())


def test_tokens_per_day_budget(alpha, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = gateway_yaml(
        {"alpha": alpha[0]}, auth={"default_budget": {"tokens_per_day": 10}}, **PLAIN
    )
    with running_gateway(raw, tmp_path) as (url, gateway):
        first = chat(url, ok_body(content="one two three four"))
        assert first.status_code == 200 and first.json()["usage"]["total_tokens"] >= 10
        limited = chat(url, ok_body())
        assert limited.status_code == 429 and "tokens for today" in error_of(limited)["message"]
        assert int(limited.headers["retry-after"]) <= 86_400
        assert chat(url, ok_body(), headers={"Authorization": f"Bearer {BOB}"}).status_code == 200


def test_anonymous_access_only_when_auth_is_off(alpha, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = gateway_yaml({"alpha": alpha[0]}, auth={"required": False}, **PLAIN)
    with running_gateway(raw, tmp_path, environ={}) as (url, _):
        assert chat(url, ok_body(), headers={}).status_code == 200
        assert (
            chat(url, ok_body(), headers={"Authorization": "Bearer sk-unknown"}).status_code == 401
        )


def test_a_backend_that_keeps_failing_is_set_aside_with_retry_after(tmp_path: Path) -> None:
    app = make_upstream("down")
    app.state.fail_status = 503
    with serve(app) as up:
        raw = gateway_yaml(
            {"down": up}, routing={"cooldown_after_failures": 2, "cooldown_seconds": 60}, **PLAIN
        )
        with running_gateway(raw, tmp_path) as (url, _):
            body = {"model": "down", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(2):
                tried = chat(url, body, headers=AUTH)
                assert tried.status_code == 503 and "retry-after" not in tried.headers
            set_aside = chat(url, body, headers=AUTH)
            assert set_aside.status_code == 503
            assert set_aside.json()["error"]["code"] == "backend_unavailable"
            assert 59 <= int(set_aside.headers["retry-after"]) <= 60
            assert app.state.calls == 2  # not called while set aside
            metrics = httpx.get(f"{url}/metrics").text
            assert 'govml_llm_backend_cooldowns_total{backend="down"} 1.0' in metrics
