"""Routing by model name, with fallback to the next backend when one is unavailable,
and a cool-down for a backend that keeps failing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from govml.llm.backends.base import (
    Backend,
    BackendRequestError,
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


class BackendsCoolingDown(BackendUnavailableError):
    """Every backend of a model is cooling down; ``retry_after`` seconds until one is tried."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Health:
    failures: int = 0  # in a row
    until: float = 0.0  # cooling down until then (clock time)


class Cooldowns:
    """Sets aside a backend that failed ``after`` times in a row for ``seconds``.

    Without it, every request pays a down backend's retries and timeouts before the
    fallback answers (up to 30 s x attempts for a hosted API that hangs). When the time
    is up one request tries the backend again (the others keep away until it is done):
    one success clears it, one more failure sets it aside again. An answer that refuses
    the request (4xx) counts as a success: the backend is up. ``on_cool_down(name)`` is
    called each time it is set aside.
    """

    def __init__(
        self,
        *,
        after: int = 3,
        seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_cool_down: Callable[[str], None] | None = None,
    ) -> None:
        if after < 1 or seconds <= 0:
            raise ValueError("a cool-down needs after >= 1 failures and seconds > 0")
        self.after = after
        self.seconds = seconds
        self._clock = clock
        self._on_cool_down = on_cool_down
        self._health: dict[str, _Health] = {}
        self._lock = threading.Lock()

    def claim(self, name: str) -> float | None:
        """None when the caller may send to ``name`` now, else the seconds until it may.

        When a cool-down has just ended, only the first caller gets None: its request
        is the one that tries the backend again, and the others keep away until it
        succeeds (cleared) or fails (set aside again); if it does neither within
        ``seconds`` (an error that says nothing of the backend's health), the next
        caller tries."""
        with self._lock:
            health = self._health.get(name)
            if health is None or health.failures < self.after:
                return None
            now = self._clock()
            if health.until > now:
                return health.until - now
            health.until = now + self.seconds  # this caller tries; the others wait for it
            return None

    def failed(self, name: str) -> None:
        with self._lock:
            health = self._health.setdefault(name, _Health())
            health.failures += 1
            failures = health.failures
            cools = failures >= self.after
            if cools:
                health.until = self._clock() + self.seconds
        if cools:
            log.warning("backend %s failed %d times in a row: set aside for %.0f s", name, failures, self.seconds)
            if self._on_cool_down is not None:
                self._on_cool_down(name)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._health.pop(name, None)


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
        cooldowns: Cooldowns | None = None,
    ) -> None:
        self._routes = routes
        self._on_fallback = on_fallback
        self._cooldowns = cooldowns

    def models(self) -> list[str]:
        return list(self._routes)

    def _failed(self, model: str, name: str, error: Exception, problems: list[str]) -> None:
        log.warning("backend %s failed for model %s: %s", name, model, error)
        problems.append(f"{name}: {error}")
        if self._cooldowns is not None:
            self._cooldowns.failed(name)
        if self._on_fallback is not None:
            self._on_fallback(model, name)

    def _succeeded(self, name: str) -> None:
        if self._cooldowns is not None:
            self._cooldowns.succeeded(name)

    def _candidates(
        self, model: str, problems: list[str], waits: list[float]
    ) -> Iterator[tuple[str, Backend]]:
        """The model's backends in order, leaving out those cooling down."""
        for name, backend in self._routes[model]:
            left = None if self._cooldowns is None else self._cooldowns.claim(name)
            if left is None:
                yield name, backend
            else:
                problems.append(f"{name}: set aside after repeated failures, tried again in {left:.0f} s")
                waits.append(left)

    def _all_failed(self, model: str, problems: list[str], waits: list[float]) -> BackendUnavailableError:
        message = f"every backend of model {model!r} is unavailable ({'; '.join(problems)})"
        if len(waits) == len(self._routes[model]):  # none was even tried
            return BackendsCoolingDown(message, retry_after=min(waits))
        return BackendUnavailableError(message)

    def complete(self, request: GenerationRequest) -> Routed:
        problems: list[str] = []
        waits: list[float] = []
        for name, backend in self._candidates(request.model, problems, waits):
            try:
                routed = Routed(name, backend.complete(request))
            except BackendUnavailableError as exc:
                self._failed(request.model, name, exc, problems)
                continue
            except BackendRequestError:
                self._succeeded(name)  # it answered: up, though it refused the request
                raise
            self._succeeded(name)
            return routed
        raise self._all_failed(request.model, problems, waits)

    def open_stream(self, request: GenerationRequest) -> RoutedStream:
        """Start streaming; falls back while no chunk has been produced yet (blocking)."""
        problems: list[str] = []
        waits: list[float] = []
        for name, backend in self._candidates(request.model, problems, waits):
            chunks = backend.stream(request)
            try:
                first = next(chunks)
            except StopIteration:
                self._succeeded(name)
                return RoutedStream(name, iter(()))
            except BackendUnavailableError as exc:
                self._failed(request.model, name, exc, problems)
                continue
            except BackendRequestError:
                self._succeeded(name)
                raise
            self._succeeded(name)
            return RoutedStream(name, _prepend(first, chunks))
        raise self._all_failed(request.model, problems, waits)


def _prepend(first: StreamChunk, rest: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()
