"""Real servers for the gateway tests: uvicorn on 127.0.0.1 in a thread, and a small
OpenAI-compatible upstream whose answers are predictable (it repeats the question)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from govml.llm.background import serve_in_background


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(app: Any) -> Any:
    """Run ``app`` under uvicorn on a free loopback port; a context yielding its base URL."""
    return serve_in_background(app)


def upstream_answer(name: str, question: str) -> str:
    return f"{name} heard: {question}"


def make_upstream(name: str = "upstream") -> FastAPI:
    """An OpenAI-compatible server answering '<name> heard: <last user message>', one
    word per token, cut at ``max_tokens``.

    ``app.state.fail_status`` (when set) makes every chat request fail with that status;
    ``app.state.delay_seconds`` holds each answer back that long (a remote model's time);
    ``app.state.calls`` counts chat requests; ``app.state.last_body`` keeps the last one.
    """
    app = FastAPI()
    app.state.fail_status = None
    app.state.delay_seconds = 0.0
    app.state.calls = 0
    app.state.last_body = None

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": "echo", "object": "model", "created": 0, "owned_by": name}],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        app.state.calls += 1
        body = await request.json()
        app.state.last_body = body
        if app.state.delay_seconds:
            await asyncio.sleep(app.state.delay_seconds)
        if app.state.fail_status is not None:
            return JSONResponse(
                {
                    "error": {
                        "message": f"{name} is failing on purpose",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=app.state.fail_status,
            )
        question = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        words = upstream_answer(name, question).split(" ")
        limit = int(body.get("max_tokens") or len(words))
        finish = "length" if len(words) > limit else "stop"
        words = words[:limit]
        text = " ".join(words)
        usage = {
            "prompt_tokens": len(question.split()),
            "completion_tokens": len(words),
            "total_tokens": len(question.split()) + len(words),
        }
        base = {"id": "chatcmpl-up", "created": 0, "model": body["model"]}
        if not body.get("stream"):
            return {
                **base,
                "object": "chat.completion",
                "usage": usage,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
            }

        def events() -> Iterator[str]:
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                chunk = {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            end = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            }
            yield f"data: {json.dumps(end)}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


_LOCAL: dict[str, Any] = {}
_LOCAL_LOCK = threading.Lock()


def local_backend(engine: str = "transformers") -> Any:
    """The packaged SmolLM2 on ``engine``, loaded once per test session.

    The float32 copy that transformers converts from the GGUF is kept in the system
    temp folder across sessions, so only the first session pays for the conversion.
    """
    import tempfile
    from pathlib import Path

    from govml.llm.backends.local import build_local_backend
    from govml.llm.config import LocalBackendConfig

    with _LOCAL_LOCK:
        if engine not in _LOCAL:
            models = Path(tempfile.gettempdir()) / "govml-test-models"
            _LOCAL[engine] = build_local_backend(
                f"local-{engine}",
                LocalBackendConfig(type="local", engine=engine),
                models_dir=models,
            )
        return _LOCAL[engine]


ALICE, BOB = "sk-alice-test", "sk-bob-test"
KEYS_ENV = {"GOVML_API_KEYS": f"{ALICE},{BOB}"}


def gateway_yaml(
    upstreams: dict[str, str], *, local: bool = False, **sections: Any
) -> dict[str, Any]:
    """A gateway.yaml as a dict: one model per upstream (named like it) answered by the
    server at that URL, with ``local`` model ``smollm2`` on the local backend too;
    ``sections`` add or replace top-level sections."""
    backends: dict[str, Any] = {}
    models: list[dict[str, Any]] = []
    if local:
        backends["local"] = {"type": "local", "engine": "transformers"}
        models.append({"name": "smollm2", "backends": ["local"], "max_tokens": 16})
    for name, url in upstreams.items():
        backends[name] = {
            "type": "openai",
            "base_url": f"{url}/v1",
            "max_retries": 0,
            "backoff_seconds": 0.01,
            "timeout_seconds": 10,
        }
        models.append({"name": name, "backends": [name]})
    return {
        "models": models,
        "backends": backends,
        "carbon": {"country_iso_code": "FRA"},
        **sections,
    }


@contextmanager
def running_gateway(
    raw: dict[str, Any],
    home: Any,
    *,
    guard: Any = None,
    output_filter: Any = None,
    cache: Any = None,
    environ: dict[str, str] | None = None,
) -> Iterator[tuple[str, Any]]:
    """A real gateway (uvicorn on 127.0.0.1) for ``raw``; yields (base URL, Gateway).

    The local model, the guard and the filter are shared across tests (loaded once).
    """
    from pathlib import Path

    from govml.llm.app import create_app
    from govml.llm.config import parse_gateway_config
    from govml.llm.gateway import Gateway

    config = parse_gateway_config(raw, source=Path("test-gateway.yaml"))
    gateway = Gateway.from_config(
        config,
        home=Path(home),
        backends={"local": local_backend()} if "local" in config.backends else {},
        guard=guard,
        output_filter=output_filter,
        cache=cache,
        environ=KEYS_ENV if environ is None else environ,
    )
    with serve(create_app(gateway)) as url:
        yield url, gateway


class CountingEncoder:
    """The shipped MiniLM, counting the texts it encodes (same identity, so a gateway's
    guard still reads its vectors)."""

    def __init__(self) -> None:
        from govml.llm.embedding import get_embedder

        self._inner = get_embedder("minilm")
        self.name = self._inner.name
        self.model_file = self._inner.model_file  # type: ignore[attr-defined]
        self.dim = self._inner.dim
        self.texts = 0

    def encode(self, texts: list[str]) -> Any:
        self.texts += len(texts)
        return self._inner.encode(texts)

    def encode_tokens(self, texts: list[str]) -> Any:
        self.texts += len(texts)
        return self._inner.encode_tokens(texts)  # type: ignore[attr-defined]

    def encode_with_tokens(self, texts: list[str]) -> Any:
        self.texts += len(texts)
        return self._inner.encode_with_tokens(texts)  # type: ignore[attr-defined]
