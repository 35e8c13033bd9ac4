"""The semantic cache of the LLM gateway: scoped, persistent, with a second check."""

from govml.llm.cache.agreement import Agreement, prompts_agree
from govml.llm.cache.entries import CacheEntry
from govml.llm.cache.scope import CacheScope
from govml.llm.cache.semantic import DEFAULT_THRESHOLD, CacheLookup, SemanticCache

__all__ = [
    "DEFAULT_THRESHOLD",
    "Agreement",
    "CacheEntry",
    "CacheLookup",
    "CacheScope",
    "SemanticCache",
    "prompts_agree",
]
