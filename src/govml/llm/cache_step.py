"""The gateway's cache step: when to ask the semantic cache, in which scope, what to store.

The scope keeps tenants apart (the API key's tenant), and answers for one model, one
system prompt, one earlier conversation and one set of sampling parameters apart. The
question looked up is the last user turn; everything before it is part of the scope. A
request with ``temperature > 0`` bypasses the cache unless ``cache.cache_sampled``
(the cache decides that itself). An answer cut at ``max_tokens`` is cached too: the
scope holds ``max_tokens``, so the same request gets the same cut answer. Only answers
that passed the output filter are stored (their redacted text), with the filter's
verdict, which a hit reports instead of checking the text again. Answers are stored
off the request path (:meth:`CacheStep.store`): the response goes out while a
writer thread stores it, and a lookup by the same tenant first waits for that tenant's
pending stores, so a client that asks again right away still gets its hit.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from govml.llm.backends.base import ChatMessage, FinishReason, GenerationRequest, Usage
from govml.llm.config import CacheConfig, RouteConfig
from govml.llm.trace import SafetyView
from govml.storage import StorageError

if TYPE_CHECKING:
    from govml.llm.cache import CacheScope, SemanticCache

_log = logging.getLogger(__name__)

#: how long a lookup waits for the same tenant's pending stores (one takes 1-6 ms here;
#: a shared PostgreSQL cache can take longer): past it, the lookup goes on and may miss
STORE_WAIT_SECONDS = 0.5
#: stores queued at most; past it (a database slower than the traffic) answers are not
#: cached rather than queued without end
MAX_PENDING_STORES = 256


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer with what the gateway knew of it when it was generated."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    output: SafetyView


@dataclass(frozen=True)
class CacheOutcome:
    status: str  # hit | miss | bypass
    similarity: float | None = None
    answer: CachedAnswer | None = None


def _question(messages: tuple[ChatMessage, ...]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def _context_key(messages: tuple[ChatMessage, ...]) -> str:
    """The system prompt and every turn before the last question, as one string."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    earlier = [(m.role, m.content) for i, m in enumerate(messages) if i != last_user]
    return json.dumps(earlier, ensure_ascii=False)


def _cached_answer(text: str, stored: Mapping[str, Any]) -> CachedAnswer:
    output = stored.get("output") or {}
    finish = stored.get("finish_reason")
    return CachedAnswer(
        text=text,
        finish_reason=finish if finish in ("stop", "length") else "stop",
        usage=Usage(int(stored.get("prompt_tokens", 0)), int(stored.get("completion_tokens", 0))),
        output=SafetyView(
            safety_score=output.get("safety_score"),
            categories=list(output.get("categories", [])),
            action=str(output.get("action", "skipped")),
        ),
    )


class CacheStep:
    """Looks answers up in, and stores them to, a :class:`SemanticCache`.

    ``vector`` and ``tokens`` arguments take the question's embedding and token vectors
    when the caller already has them (the prompt guard and the cache share one encoder:
    :meth:`encode` gives both from one run), saving an encoding per step.
    """

    def __init__(self, cache: SemanticCache | None, config: CacheConfig) -> None:
        self._cache = cache
        self._config = config
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="govml-cache-store")
        self._pending: dict[str, set[Future[None]]] = {}
        self._pending_lock = threading.Lock()

    def _scope(self, tenant: str, request: GenerationRequest) -> CacheScope:
        from govml.llm.cache import CacheScope

        return CacheScope.for_request(
            api_key=tenant,
            model=request.model,
            system_prompt=_context_key(request.messages),
            sampling={
                "temperature": request.temperature,
                "top_p": request.top_p,
                "max_tokens": request.max_tokens,
                "stop": list(request.stop) or None,
                "seed": request.seed,
            },
        )

    def _cache_for(self, route: RouteConfig) -> SemanticCache | None:
        """The cache, unless the route opts out (temperature is the cache's own call)."""
        return self._cache if self._config.enabled and route.cache else None

    def encode(
        self, route: RouteConfig, texts: list[str]
    ) -> tuple[np.ndarray, list[np.ndarray] | None] | None:
        """Embeddings of ``texts`` with the cache's encoder, and their token vectors while
        the cache's token check is on (None when the route has no cache)."""
        cache = self._cache_for(route)
        if cache is None or not texts:
            return None
        return cache.embed(texts)

    def lookup(
        self,
        tenant: str,
        route: RouteConfig,
        request: GenerationRequest,
        *,
        vector: np.ndarray | None = None,
        tokens: np.ndarray | None = None,
    ) -> CacheOutcome:
        cache = self._cache_for(route)
        question = _question(request.messages)
        if cache is None or not question.strip():
            return CacheOutcome("bypass")
        self._wait_for_stores(tenant)
        try:
            found = cache.lookup(self._scope(tenant, request), question, vector=vector, tokens=tokens)
        except StorageError as exc:  # a shared cache database that is down costs hits, not answers
            _log.warning("cache lookup skipped: %s", exc)
            return CacheOutcome("bypass")
        if found.status == "hit" and found.entry is not None:
            answer = _cached_answer(found.entry.answer, found.entry.usage)
            return CacheOutcome("hit", found.similarity, answer)
        return CacheOutcome(found.status, found.similarity)

    def store(
        self,
        tenant: str,
        route: RouteConfig,
        request: GenerationRequest,
        answer: CachedAnswer,
        *,
        vector: np.ndarray | None = None,
        tokens: np.ndarray | None = None,
    ) -> None:
        """Keep ``answer`` for the request's question; the writer thread stores it and
        this returns at once (:meth:`lookup` of the same tenant waits for it)."""
        cache = self._cache_for(route)
        question = _question(request.messages)
        if cache is None or not answer.text or not question.strip():
            return
        scope = self._scope(tenant, request)
        usage = {
            "prompt_tokens": answer.usage.prompt_tokens,
            "completion_tokens": answer.usage.completion_tokens,
            "finish_reason": answer.finish_reason,
            "output": answer.output.json(),
        }

        def write() -> None:
            try:
                cache.store(scope, question, answer.text, usage, vector=vector, tokens=tokens)
            except StorageError as exc:
                _log.warning("answer not cached: %s", exc)
            except Exception:  # a thread has no caller to raise to: say it, keep serving
                _log.exception("storing an answer in the cache failed")

        with self._pending_lock:
            if sum(len(p) for p in self._pending.values()) >= MAX_PENDING_STORES:
                _log.warning("answer not cached: %d stores are already waiting", MAX_PENDING_STORES)
                return
            try:
                future = self._writer.submit(write)
            except RuntimeError:  # finish_stores() ran: a request that outlived shutdown
                _log.warning("answer not cached: the gateway is shutting down")
                return
            self._pending.setdefault(tenant, set()).add(future)
        future.add_done_callback(lambda done: self._forget(tenant, done))

    def _forget(self, tenant: str, future: Future[None]) -> None:
        with self._pending_lock:
            pending = self._pending.get(tenant)
            if pending is not None:
                pending.discard(future)
                if not pending:
                    del self._pending[tenant]

    def _wait_for_stores(self, tenant: str) -> None:
        with self._pending_lock:
            pending = list(self._pending.get(tenant, ()))
        if pending:
            wait_for_futures(pending, timeout=STORE_WAIT_SECONDS)

    def finish_stores(self) -> None:
        """Wait for the pending stores and stop the writer (on shutdown)."""
        self._writer.shutdown(wait=True)

    def close(self) -> None:
        self.finish_stores()
        if self._cache is not None:
            self._cache.close()
