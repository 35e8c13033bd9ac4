"""The gateway's HTTP face: OpenAI's ``/v1/models`` and ``/v1/chat/completions``, plus
``/metrics`` and ``/health``.

Each chat request goes: key and budget -> prompt guard -> semantic cache -> generation
-> output filter. Handlers stay thin and async; the guard, the cache, the model and the
filter are synchronous and run in worker threads, so one generation does not stall
other requests. Every refusal is an OpenAI-shaped error; every answer carries a
``govml`` object and ``x-govml-*`` headers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from govml.llm.backends import BackendsCoolingDown
from govml.llm.backends.base import (
    BackendRequestError,
    BackendUnavailableError,
    GenerationRequest,
    StreamChunk,
    Usage,
)
from govml.llm.budgets import BudgetExceeded
from govml.llm.cache_step import CachedAnswer
from govml.llm.config import KeyEntry, RouteConfig, hash_key
from govml.llm.gateway import Gateway
from govml.llm.openai_errors import (
    OpenAIError,
    backend_failed,
    backend_unavailable,
    content_filtered,
    invalid_request,
    model_not_found,
    rate_limited,
    unauthorized,
)
from govml.llm.safety_steps import stream_action, stream_view, user_turns
from govml.llm.schemas import ChatCompletionRequest, chunk_json, completion_json, models_json
from govml.llm.trace import RequestTrace

log = logging.getLogger(__name__)
_ANONYMOUS = "anonymous"


class _BodySizeLimit:
    """Refuses a body whose declared length is over the limit before reading it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                error = _too_large(self.max_bytes)
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _too_large(max_bytes: int) -> OpenAIError:
    return OpenAIError(413, f"the request body is over the gateway's limit of {max_bytes} bytes")


# ---------------------------------------------------------------------------- request checks


def _authenticate(gateway: Gateway, request: Request) -> KeyEntry:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        if not gateway.config.auth.required:
            return KeyEntry(sha256="", tenant=_ANONYMOUS, budget=gateway.config.auth.default_budget)
        raise unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'.")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("Malformed Authorization header: expected 'Bearer <key>'.")
    entry = gateway.keys.get(hash_key(token))
    if entry is None:
        raise unauthorized("Incorrect API key provided.")
    return entry


def _parse(body: bytes, gateway: Gateway) -> ChatCompletionRequest:
    limits = gateway.config.limits
    if len(body) > limits.max_body_bytes:
        raise _too_large(limits.max_body_bytes)
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_request(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    try:
        parsed = ChatCompletionRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise invalid_request(f"Invalid value for '{where}': {first['msg']}", param=where) from None
    if len(parsed.messages) > limits.max_messages:
        raise invalid_request(
            f"Too many messages ({len(parsed.messages)}); the limit is {limits.max_messages}.",
            param="messages",
        )
    size = sum(len(m.text()) for m in parsed.messages)
    if size > limits.max_prompt_chars:
        raise invalid_request(
            f"The prompt has {size} characters; this gateway accepts at most "
            f"{limits.max_prompt_chars}.",
            param="messages",
            code="context_length_exceeded",
        )
    return parsed


def _generation_request(parsed: ChatCompletionRequest, route: RouteConfig) -> GenerationRequest:
    wanted = parsed.max_completion_tokens or parsed.max_tokens or route.max_tokens
    return GenerationRequest(
        model=route.name,
        messages=parsed.chat_messages(),
        max_tokens=min(wanted, route.max_tokens),
        temperature=parsed.temperature,
        top_p=parsed.top_p,
        stop=parsed.stop_sequences(),
        seed=parsed.seed,
    )


def _system_prompt(request: GenerationRequest) -> str | None:
    prompts = [m.content for m in request.messages if m.role == "system"]
    return "\n".join(prompts) if prompts else None


def _backend_error(exc: BackendUnavailableError | BackendRequestError) -> OpenAIError:
    if isinstance(exc, BackendsCoolingDown):  # nothing was tried: say when to come back
        return backend_unavailable(str(exc), retry_after=max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, BackendUnavailableError):
        return backend_unavailable(str(exc))
    if exc.status_code in (400, 413, 422):
        return invalid_request(str(exc))
    return backend_failed(str(exc))


@contextmanager
def _gateway_step(trace: RequestTrace, name: str) -> Iterator[None]:
    """Time a guard, cache or filter step into the request's overhead and CPU time."""
    started, cpu_before = time.perf_counter(), trace.cpu.seconds
    with trace.cpu.timed():
        yield
    trace.add_step(name, time.perf_counter() - started, trace.cpu.seconds - cpu_before)


# ---------------------------------------------------------------------------- the pipeline


class _ChatPipeline:
    """One chat request through guard -> cache -> generation -> filter (sync parts)."""

    def __init__(
        self, gateway: Gateway, key: KeyEntry, route: RouteConfig, parsed: ChatCompletionRequest
    ) -> None:
        self.gateway = gateway
        self.key = key
        self.route = route
        self.parsed = parsed
        self.request = _generation_request(parsed, route)
        self.system_prompt = _system_prompt(self.request)
        self.trace = RequestTrace(tenant=key.tenant, model=route.name, stream=parsed.stream)
        self.cached: CachedAnswer | None = None
        self.question_vector: np.ndarray | None = None
        self.question_tokens: np.ndarray | None = None
        self.finished = False

    def check_input_and_cache(self) -> None:
        """Guard the prompt (raise when blocked), then look the cache up; the user turns
        are encoded once, for the guard's classifier and the cache alike."""
        trace, gateway, route = self.trace, self.gateway, self.route
        turns = user_turns(self.request.messages)
        # the turns' vectors and token vectors, kept from the guard's call for the cache
        encoded: list[tuple[np.ndarray, list[np.ndarray] | None] | None] = [None]

        def encode(texts: list[str]) -> np.ndarray | None:
            encoded[0] = gateway.cache.encode(route, texts)
            return None if encoded[0] is None else encoded[0][0]

        with _gateway_step(trace, "input_check"):
            verdict = gateway.safety.check_input(
                route,
                self.request.messages,
                encode=encode if gateway.guard_uses_cache_vectors else None,
            )
        trace.input = verdict.view
        trace.prompt = "\n".join(m.content for m in verdict.messages if m.role == "user")
        gateway.metrics.safety.labels(route.name, "input", verdict.view.action).inc()
        if verdict.blocked:
            raise content_filtered(
                f"The prompt was blocked by the gateway's safety policy: {verdict.reason}",
                verdict.view.categories,
                trace.govml(gateway.carbon),
            )
        if encoded[0] is not None and user_turns(verdict.messages)[-1:] == turns[-1:]:
            # not redacted: the embedding still holds
            vectors, tokens = encoded[0]
            self.question_vector = vectors[-1]
            self.question_tokens = tokens[-1] if tokens else None
        self.request = replace(self.request, messages=verdict.messages)
        with _gateway_step(trace, "cache_lookup"):
            outcome = gateway.cache.lookup(
                self.key.tenant,
                route,
                self.request,
                vector=self.question_vector,
                tokens=self.question_tokens,
            )
        trace.cache_status = outcome.status
        trace.cache_similarity = outcome.similarity
        gateway.metrics.cache.labels(route.name, outcome.status).inc()
        if outcome.answer is not None:
            self.cached = outcome.answer
            trace.backend = "cache"

    def store(self, text: str, finish: str, usage: Usage) -> None:
        """Keep a generated answer that passed the output filter (off the request path)."""
        if self.trace.cache_status != "miss" or finish not in ("stop", "length"):
            return
        answer = CachedAnswer(text, finish, usage, self.trace.output)  # type: ignore[arg-type]
        self.gateway.cache.store(
            self.key.tenant,
            self.route,
            self.request,
            answer,
            vector=self.question_vector,
            tokens=self.question_tokens,
        )

    def complete(self) -> JSONResponse:
        """The non-streaming answer."""
        self.check_input_and_cache()
        trace, gateway = self.trace, self.gateway
        if self.cached is not None:
            text, finish, usage = self.cached.text, self.cached.finish_reason, self.cached.usage
            trace.output = self.cached.output
        else:
            started = time.perf_counter()
            try:
                with trace.cpu.timed():
                    routed = gateway.router.complete(self.request)
            except (BackendUnavailableError, BackendRequestError) as exc:
                raise _backend_error(exc) from None
            trace.generation_seconds = time.perf_counter() - started
            trace.backend = routed.backend
            completion = routed.completion
            with _gateway_step(trace, "output_check"):
                verdict = gateway.safety.check_output(
                    self.route, completion.text, self.system_prompt
                )
            trace.output = verdict.view
            gateway.metrics.safety.labels(self.route.name, "output", verdict.view.action).inc()
            text, usage = verdict.text, completion.usage
            finish = "content_filter" if verdict.blocked else completion.finish_reason
            self.store(text, finish, usage)
        trace.usage = usage
        trace.answer = text
        body = completion_json(
            request_id=trace.request_id,
            created=trace.created,
            model=self.route.name,
            content=text,
            finish_reason=finish,
            usage=usage,
            govml=trace.govml(gateway.carbon),
        )
        self.finish(200, "content_filter" if finish == "content_filter" else "ok")
        return JSONResponse(body, headers=self.trace.headers(gateway.carbon))

    def open_source(self) -> Iterator[StreamChunk]:
        """Where the streamed text comes from: the cache, or a backend (fallback applies)."""
        if self.cached is not None:
            return _replay(self.cached)
        try:
            with self.trace.cpu.timed():
                routed = self.gateway.router.open_stream(self.request)
        except (BackendUnavailableError, BackendRequestError) as exc:
            raise _backend_error(exc) from None
        self.trace.backend = routed.backend
        return routed.chunks

    def events(self, source: Iterator[StreamChunk]) -> Generator[str, None, None]:
        """The SSE stream: role, content deltas, finish (with ``govml``), usage, [DONE]."""
        trace, gateway, route = self.trace, self.gateway, self.route
        include_usage = self.parsed.wants_usage_chunk()
        common: dict[str, Any] = {
            "request_id": trace.request_id,
            "created": trace.created,
            "model": route.name,
            "include_usage_field": include_usage,
        }
        yield _sse(chunk_json(**common, delta={"role": "assistant", "content": ""}))
        # a cached answer passed the filter when it was stored
        watcher = None if self.cached else gateway.safety.stream_filter(self.system_prompt)
        results, parts = [], []
        action, finish, usage = "allow", "stop", None
        started = time.perf_counter()
        try:
            while True:
                with trace.cpu.timed():
                    chunk = next(source, None)
                if chunk is None:
                    break
                if chunk.text:
                    trace.mark_first_token()
                    if watcher is not None:
                        with _gateway_step(trace, "output_check"):
                            result = watcher.feed(chunk.text)
                        if result is not None:
                            results.append(result)
                            action = _escalate(action, stream_action(result, route))
                            if action == "block":
                                finish = "content_filter"
                                break
                    parts.append(chunk.text)
                    yield _sse(chunk_json(**common, delta={"content": chunk.text}))
                if chunk.finish_reason is not None:
                    finish, usage = chunk.finish_reason, chunk.usage
        except (BackendUnavailableError, BackendRequestError) as exc:
            error = _backend_error(exc)
            self.finish(error.status_code, "backend_error")
            yield _sse(error.body())
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        trace.generation_seconds = time.perf_counter() - started
        if watcher is not None and action != "block" and parts:
            with _gateway_step(trace, "output_check"):
                final = watcher.finish()
            results.append(final)
            action = _escalate(action, stream_action(final, route))
            if action == "block":
                finish = "content_filter"
        if self.cached is not None:
            trace.output = self.cached.output
        else:
            trace.output = stream_view(results, action)
            gateway.metrics.safety.labels(route.name, "output", action).inc()
        trace.usage = usage or Usage(0, len(parts))
        trace.answer = "".join(parts)
        self.store(trace.answer, finish, trace.usage)
        govml = trace.govml(gateway.carbon)
        yield _sse(chunk_json(**common, delta={}, finish_reason=finish, govml=govml))
        if include_usage:
            yield _sse(chunk_json(**common, delta=None, usage=trace.usage, govml=govml))
        yield "data: [DONE]\n\n"
        self.finish(200, "content_filter" if finish == "content_filter" else "ok")

    def finish(self, status_code: int, outcome: str) -> None:
        """Charge the budget, count the metrics and queue the log record (once)."""
        if self.finished:
            return
        self.finished = True
        trace, gateway, model = self.trace, self.gateway, self.route.name
        usage = trace.usage
        if usage is not None and trace.cache_status != "hit":
            gateway.budgets.charge(self.key, usage.total_tokens)
            gateway.metrics.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
            gateway.metrics.tokens.labels(model, "completion").inc(usage.completion_tokens)
        rate = trace.tokens_per_second()
        if rate is not None and trace.backend:
            gateway.metrics.tokens_per_second.labels(model, trace.backend).observe(rate)
        if trace.first_token_seconds is not None:
            gateway.metrics.first_token.labels(model).observe(trace.first_token_seconds)
        gateway.metrics.requests.labels(model, outcome).inc()
        gateway.metrics.latency.labels(model).observe(trace.latency_ms() / 1000)
        gateway.metrics.overhead.labels(model).observe(trace.overhead_seconds)
        gateway.metrics.carbon.labels(model).inc(gateway.carbon.grams(trace.cpu.seconds))
        if gateway.request_log is not None:
            gateway.request_log.write(
                trace.record(status_code=status_code, outcome=outcome, carbon=gateway.carbon)
            )


_ACTIONS = ("allow", "flag", "block")


def _escalate(current: str, new: str) -> str:
    return max(current, new, key=_ACTIONS.index)


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _replay(answer: CachedAnswer) -> Iterator[StreamChunk]:
    """A cached answer as a stream of word-sized chunks, like a generated one."""
    word = ""
    for char in answer.text:
        word += char
        if char.isspace():
            yield StreamChunk(text=word)
            word = ""
    if word:
        yield StreamChunk(text=word)
    yield StreamChunk(finish_reason=answer.finish_reason, usage=answer.usage)


# ---------------------------------------------------------------------------- the app


def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI app serving ``gateway``; it closes the gateway when it shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(gateway.close)

    app = FastAPI(title="govml LLM gateway", version="1", lifespan=lifespan)
    app.state.gateway = gateway
    app.add_middleware(_BodySizeLimit, max_bytes=gateway.config.limits.max_body_bytes)
    started = int(time.time())

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else None
        return OpenAIError(exc.status_code, str(exc.detail), code=kind).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request(f"Invalid request: {exc.errors()[0].get('msg', exc)}").response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return OpenAIError(
            500, "The gateway hit an internal error.", type="server_error"
        ).response()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        _authenticate(gateway, request)
        return models_json([r.name for r in gateway.config.models], created=started)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        key = _authenticate(gateway, request)
        parsed = _parse(await request.body(), gateway)
        route = gateway.config.route(parsed.model)
        if route is None:
            raise model_not_found(parsed.model, [r.name for r in gateway.config.models])
        try:
            gateway.budgets.admit(key)
        except BudgetExceeded as exc:
            gateway.metrics.requests.labels(route.name, "rate_limited").inc()
            raise rate_limited(exc.message, retry_after=exc.retry_after) from None
        pipeline = _ChatPipeline(gateway, key, route, parsed)
        try:
            if not parsed.stream:
                return await run_in_threadpool(pipeline.complete)
            await run_in_threadpool(pipeline.check_input_and_cache)
            source = await run_in_threadpool(pipeline.open_source)
        except OpenAIError as exc:
            outcome = "blocked" if exc.code == "content_filter" else "error"
            pipeline.finish(exc.status_code, outcome)
            raise
        events = pipeline.events(source)

        async def body() -> AsyncIterator[str]:
            try:
                async for event in iterate_in_threadpool(events):
                    yield event
            finally:
                # the client may leave mid-stream: stop the generation it was waiting for
                await run_in_threadpool(events.close)
                pipeline.finish(499, "client_closed")  # no-op when the stream completed

        headers = pipeline.trace.headers(gateway.carbon)
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    return app
