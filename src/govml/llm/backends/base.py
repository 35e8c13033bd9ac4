"""The contract every LLM backend keeps, and the typed values that cross it.

A backend is synchronous: the gateway runs it in a worker thread, so CPU-bound
generation never blocks the event loop. ``stream`` yields text deltas and ends with
one chunk that carries the finish reason and the token usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from govml.errors import GovmlError

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: the conversation and the sampling parameters."""

    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed answer; the last one has ``finish_reason`` and ``usage``."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = field(default=None)


class BackendUnavailableError(GovmlError):
    """The backend could not answer (down, timed out, 5xx); the next one may."""


class BackendRequestError(GovmlError):
    """The backend refused the request itself (4xx): another backend would refuse it too."""

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@runtime_checkable
class Backend(Protocol):
    """A source of chat completions: a local model or an upstream server."""

    name: str

    def complete(self, request: GenerationRequest) -> Completion:
        """Generate the whole answer (blocking)."""
        ...

    def stream(self, request: GenerationRequest) -> Iterator[StreamChunk]:
        """Generate the answer piece by piece; closing the iterator stops generation."""
        ...

    def close(self) -> None:
        """Release threads, connections and models."""
        ...


def collect(chunks: Iterator[StreamChunk]) -> Completion:
    """Join a stream into one completion (for backends whose only native mode is streaming)."""
    parts: list[str] = []
    finish: FinishReason = "stop"
    usage = Usage(0, 0)
    for chunk in chunks:
        parts.append(chunk.text)
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    return Completion(text="".join(parts), finish_reason=finish, usage=usage)
