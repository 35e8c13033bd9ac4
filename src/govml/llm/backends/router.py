"""Routing by model name, with fallback to the next backend when one is unavailable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from govml.llm.backends.base import (
    Backend,
    BackendUnavailableError,
    Completion,
    GenerationRequest,
    StreamChunk,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routed:
    """An answer and the backend that produced it."""

    backend: str
    completion: Completion


@dataclass
class RoutedStream:
    """A stream already started on ``backend``: its first chunk is in hand."""

    backend: str
    chunks: Iterator[StreamChunk]


class Router:
    """Sends each request to the first healthy backend of its model's list.

    ``routes`` maps a model name to its backends in fallback order, each under the name
    the configuration gives it (reported as the answer's ``backend``).
    """

    def __init__(
        self,
        routes: Mapping[str, Sequence[tuple[str, Backend]]],
        *,
        on_fallback: Callable[[str, str], None] | None = None,
    ) -> None:
        self._routes = routes
        self._on_fallback = on_fallback

    def models(self) -> list[str]:
        return list(self._routes)

    def _failed(self, model: str, name: str, error: Exception, problems: list[str]) -> None:
        log.warning("backend %s failed for model %s: %s", name, model, error)
        problems.append(f"{name}: {error}")
        if self._on_fallback is not None:
            self._on_fallback(model, name)

    def _all_failed(self, model: str, problems: list[str]) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"every backend of model {model!r} is unavailable ({'; '.join(problems)})"
        )

    def complete(self, request: GenerationRequest) -> Routed:
        problems: list[str] = []
        for name, backend in self._routes[request.model]:
            try:
                return Routed(name, backend.complete(request))
            except BackendUnavailableError as exc:
                self._failed(request.model, name, exc, problems)
        raise self._all_failed(request.model, problems)

    def open_stream(self, request: GenerationRequest) -> RoutedStream:
        """Start streaming; falls back while no chunk has been produced yet (blocking)."""
        problems: list[str] = []
        for name, backend in self._routes[request.model]:
            chunks = backend.stream(request)
            try:
                first = next(chunks)
            except StopIteration:
                return RoutedStream(name, iter(()))
            except BackendUnavailableError as exc:
                self._failed(request.model, name, exc, problems)
                continue
            return RoutedStream(name, _prepend(first, chunks))
        raise self._all_failed(request.model, problems)


def _prepend(first: StreamChunk, rest: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()
