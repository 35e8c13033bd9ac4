"""Per-key budgets: requests per minute (sliding window) and tokens per UTC day.

Held in the gateway process's memory: a restart starts every key's day afresh, and two
gateway processes each enforce their own budget.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from govml.llm.config import KeyEntry

_DAY = 86_400
_MINUTE = 60.0


class BudgetExceeded(Exception):
    """A key is over one of its budgets; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BudgetTracker:
    """Admits requests and charges tokens against each key's budget (thread-safe)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}
        self._tokens: dict[tuple[str, int], int] = {}

    def admit(self, key: KeyEntry) -> None:
        """Count one request, or raise :class:`BudgetExceeded` without counting it."""
        now = self._clock()
        day = int(now // _DAY)
        with self._lock:
            limit = key.budget.tokens_per_day
            used = self._tokens.get((key.sha256, day), 0)
            if limit is not None and used >= limit:
                raise BudgetExceeded(
                    f"{key.tenant} has used its {limit} tokens for today (UTC)",
                    retry_after=max(1, math.ceil((day + 1) * _DAY - now)),
                )
            per_minute = key.budget.requests_per_minute
            recent = self._recent.setdefault(key.sha256, deque())
            while recent and recent[0] <= now - _MINUTE:
                recent.popleft()
            if per_minute is not None and len(recent) >= per_minute:
                raise BudgetExceeded(
                    f"{key.tenant} is over its {per_minute} requests per minute",
                    retry_after=max(1, math.ceil(recent[0] + _MINUTE - now)),
                )
            recent.append(now)

    def charge(self, key: KeyEntry, tokens: int) -> None:
        """Add tokens to today's count (after the answer, when they are known)."""
        day = int(self._clock() // _DAY)
        with self._lock:
            self._tokens[(key.sha256, day)] = self._tokens.get((key.sha256, day), 0) + tokens
            for stale in [k for k in self._tokens if k[1] < day]:
                del self._tokens[stale]

    def tokens_today(self, key: KeyEntry) -> int:
        with self._lock:
            return self._tokens.get((key.sha256, int(self._clock() // _DAY)), 0)
