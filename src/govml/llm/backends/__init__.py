"""LLM backends: one :class:`Backend` contract, a local model and OpenAI-compatible upstreams."""

from __future__ import annotations

from pathlib import Path

from govml.llm.backends.base import (
    Backend,
    BackendRequestError,
    BackendUnavailableError,
    ChatMessage,
    Completion,
    GenerationRequest,
    StreamChunk,
    Usage,
)
from govml.llm.backends.router import BackendsCoolingDown, Cooldowns, Routed, RoutedStream, Router
from govml.llm.config import GatewayConfig, LocalBackendConfig

__all__ = [
    "Backend",
    "BackendRequestError",
    "BackendUnavailableError",
    "BackendsCoolingDown",
    "ChatMessage",
    "Completion",
    "Cooldowns",
    "GenerationRequest",
    "Routed",
    "RoutedStream",
    "Router",
    "StreamChunk",
    "Usage",
    "build_backends",
]


def build_backends(config: GatewayConfig, *, models_dir: Path) -> dict[str, Backend]:
    """Instantiate every backend the configuration defines (local models load here)."""
    from govml.llm.backends.local import build_local_backend
    from govml.llm.backends.upstream import OpenAICompatibleBackend

    built: dict[str, Backend] = {}
    for name, spec in config.backends.items():
        if isinstance(spec, LocalBackendConfig):
            built[name] = build_local_backend(name, spec, models_dir=models_dir)
        else:
            built[name] = OpenAICompatibleBackend(name, spec)
    return built
