"""An OpenAI-compatible upstream (vLLM, Ollama, a llama.cpp server, a hosted API) over httpx.

Connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff
and then reported as :class:`BackendUnavailableError`, so the router can fall back to the
next backend; a 4xx answer is the request's fault and is passed on as it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from govml.llm.backends.base import (
    BackendRequestError,
    BackendUnavailableError,
    Completion,
    GenerationRequest,
    StreamChunk,
    Usage,
)
from govml.llm.config import OpenAIBackendConfig

_RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(body)[:200]


def _finish_reason(value: object) -> str:
    return value if value in ("stop", "length", "content_filter") else "stop"  # type: ignore[return-value]


class OpenAICompatibleBackend:
    """Chat completions from a remote server speaking OpenAI's API."""

    def __init__(
        self,
        name: str,
        config: OpenAIBackendConfig,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self._config = config
        key = config.resolved_api_key()
        self._client = httpx.Client(
            base_url=config.base_url,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds),
            transport=transport,
        )

    def _payload(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._config.model or request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": stream,
        }
        if request.stop:
            payload["stop"] = list(request.stop)
        if request.seed is not None:
            payload["seed"] = request.seed
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _send(self, payload: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST with retries; returns a 2xx response (open, when streaming)."""
        problem = "no attempt made"
        for attempt in range(self._config.max_retries + 1):
            if attempt:
                time.sleep(self._config.backoff_seconds * 2 ** (attempt - 1))
            try:
                request = self._client.build_request("POST", "/chat/completions", json=payload)
                response = self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return response
            if stream:
                response.read()
            response.close()
            problem = f"HTTP {response.status_code}: {_error_message(response)}"
            if response.status_code not in _RETRYABLE_STATUS:
                raise BackendRequestError(
                    f"upstream {self.name} refused the request: {problem}",
                    status_code=response.status_code,
                )
        raise BackendUnavailableError(
            f"upstream {self.name} ({self._config.base_url}) failed after "
            f"{self._config.max_retries + 1} attempts: {problem}"
        )

    def complete(self, request: GenerationRequest) -> Completion:
        response = self._send(self._payload(request, stream=False), stream=False)
        try:
            body = response.json()
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Completion(
                text=choice["message"].get("content") or "",
                finish_reason=_finish_reason(choice.get("finish_reason")),  # type: ignore[arg-type]
                usage=Usage(
                    int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                ),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendUnavailableError(
                f"upstream {self.name} sent a malformed answer: {exc}"
            ) from exc

    def stream(self, request: GenerationRequest) -> Iterator[StreamChunk]:
        response = self._send(self._payload(request, stream=True), stream=True)
        finish: object = None
        usage: Usage | None = None
        pieces = 0
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = Usage(
                        int(chunk["usage"].get("prompt_tokens", 0)),
                        int(chunk["usage"].get("completion_tokens", 0)),
                    )
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        pieces += 1
                        yield StreamChunk(text=text)
                    finish = choice.get("finish_reason") or finish
        except (httpx.TransportError, ValueError) as exc:
            raise BackendUnavailableError(
                f"upstream {self.name} broke off the stream: {exc}"
            ) from exc
        finally:
            response.close()
        # a server that ignores include_usage: one chunk is about one token
        yield StreamChunk(
            finish_reason=_finish_reason(finish),  # type: ignore[arg-type]
            usage=usage or Usage(0, pieces),
        )

    def close(self) -> None:
        self._client.close()
