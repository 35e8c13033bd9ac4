"""The gateway's cache step: when to ask the semantic cache, in which scope, what to store.

The scope keeps tenants apart (the API key's tenant), and answers for one model, one
system prompt, one earlier conversation and one set of sampling parameters apart. The
question looked up is the last user turn; everything before it is part of the scope. A
request with ``temperature > 0`` bypasses the cache unless ``cache.cache_sampled``
(the cache decides that itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from govml.llm.backends.base import ChatMessage, GenerationRequest, Usage
from govml.llm.config import CacheConfig, RouteConfig

if TYPE_CHECKING:
    from govml.llm.cache.scope import CacheScope
    from govml.llm.cache.semantic import SemanticCache


@dataclass(frozen=True)
class CacheOutcome:
    status: str  # hit | miss | bypass
    similarity: float | None = None
    answer: str | None = None
    usage: Usage | None = None


def _question(messages: tuple[ChatMessage, ...]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def _context_key(messages: tuple[ChatMessage, ...]) -> str:
    """The system prompt and every turn before the last question, as one string."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    earlier = [(m.role, m.content) for i, m in enumerate(messages) if i != last_user]
    return json.dumps(earlier, ensure_ascii=False)


class CacheStep:
    """Looks answers up in, and stores them to, a :class:`SemanticCache`."""

    def __init__(self, cache: SemanticCache | None, config: CacheConfig) -> None:
        self._cache = cache
        self._config = config

    def _scope(self, tenant: str, request: GenerationRequest) -> CacheScope:
        from govml.llm.cache.scope import CacheScope

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

    def lookup(self, tenant: str, route: RouteConfig, request: GenerationRequest) -> CacheOutcome:
        cache = self._cache_for(route)
        question = _question(request.messages)
        if cache is None or not question.strip():
            return CacheOutcome("bypass")
        found = cache.lookup(self._scope(tenant, request), question)
        if found.status == "hit" and found.entry is not None:
            usage = found.entry.usage
            return CacheOutcome(
                "hit",
                found.similarity,
                found.entry.answer,
                Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            )
        return CacheOutcome(found.status, found.similarity)

    def store(
        self, tenant: str, route: RouteConfig, request: GenerationRequest, answer: str, usage: Usage
    ) -> None:
        cache = self._cache_for(route)
        question = _question(request.messages)
        if cache is not None and answer and question.strip():
            cache.store(
                self._scope(tenant, request),
                question,
                answer,
                {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                },
            )

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
