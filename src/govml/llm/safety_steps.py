"""The gateway's two safety steps, per route policy: the prompt check before the cache
and the model, the answer check after (whole answers, or a stream window by window)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from govml.llm.backends.base import ChatMessage
from govml.llm.config import RouteConfig, SafetyConfig
from govml.llm.safety import (
    GuardResult,
    OutputFilter,
    PromptGuard,
    StreamingOutputFilter,
    apply_policy,
)
from govml.llm.trace import SKIPPED, SafetyView

_ACTION_ORDER = ("allow", "flag", "redact", "block")


@dataclass(frozen=True)
class InputVerdict:
    """The conversation to send on (user turns redacted where the policy says so)."""

    messages: tuple[ChatMessage, ...]
    view: SafetyView
    reason: str | None = None

    @property
    def blocked(self) -> bool:
        return self.view.action == "block"


@dataclass(frozen=True)
class OutputVerdict:
    text: str
    view: SafetyView
    reason: str | None = None

    @property
    def blocked(self) -> bool:
        return self.view.action == "block"


def user_turns(messages: tuple[ChatMessage, ...]) -> list[str]:
    """The texts the prompt guard checks: the non-empty user turns, in order."""
    return [m.content for m in messages if m.role == "user" and m.content]


def _worst(actions: list[str]) -> str:
    return max(actions, key=_ACTION_ORDER.index, default="allow")


def _view(results: list[GuardResult], action: str) -> SafetyView:
    categories = list(dict.fromkeys(c for r in results for c in r.categories))
    score = min((r.safety_score for r in results), default=1.0)
    return SafetyView(safety_score=score, categories=categories, action=action)


class SafetySteps:
    """Runs the prompt guard and the output filter with a route's policies."""

    def __init__(
        self, guard: PromptGuard | None, output_filter: OutputFilter | None, config: SafetyConfig
    ) -> None:
        self._guard = guard
        self._filter = output_filter
        self._config = config

    def check_input(
        self,
        route: RouteConfig,
        messages: tuple[ChatMessage, ...],
        *,
        encode: Callable[[list[str]], np.ndarray | None] | None = None,
    ) -> InputVerdict:
        """Check every user turn; block if one is blocked, redact those the policy redacts.

        ``encode``: the :func:`user_turns` texts to vectors with the guard's encoder (the
        semantic cache's, which keeps them), or None; the guard calls it while it looks
        for personal data. Without a guard nothing is encoded here.
        """
        users = [i for i, m in enumerate(messages) if m.role == "user" and m.content]
        texts = [messages[i].content for i in users]
        if self._guard is None or not users:
            return InputVerdict(messages=messages, view=SKIPPED)
        results = self._guard.check_batch(texts, encode=encode)
        decisions = [
            apply_policy(r, route.policy.input, text=messages[i].content)
            for i, r in zip(users, results, strict=True)
        ]
        updated = list(messages)
        for i, decision in zip(users, decisions, strict=True):
            if decision.action == "redact":
                updated[i] = ChatMessage(role="user", content=decision.text)
        action = _worst([d.action for d in decisions])
        reason = next((d.reason for d in decisions if d.action == action and d.reason), None)
        return InputVerdict(
            messages=tuple(updated),
            view=_view(results, action),
            reason=reason,
        )

    def check_output(
        self, route: RouteConfig, text: str, system_prompt: str | None
    ) -> OutputVerdict:
        """Check a whole answer; a blocked answer becomes empty text."""
        if self._filter is None or not text:
            return OutputVerdict(text=text, view=SKIPPED)
        result = self._filter.check(text, system_prompt=system_prompt)
        decision = apply_policy(result, route.policy.output, text=text)
        return OutputVerdict(
            text=decision.text, view=_view([result], decision.action), reason=decision.reason
        )

    def stream_filter(self, system_prompt: str | None) -> StreamingOutputFilter | None:
        if self._filter is None:
            return None
        return StreamingOutputFilter(
            self._filter,
            system_prompt=system_prompt,
            window=self._config.stream_window_chars,
            check_every=self._config.stream_check_every_chars,
        )


def stream_action(result: GuardResult, route: RouteConfig) -> str:
    """What a failed window does to a stream: sent text cannot be redacted, so under
    ``block`` and ``redact`` anything the policy would act on ends the stream."""
    needs_action = result.flagged or bool(result.pii) or "system_prompt_leak" in result.categories
    if not needs_action:
        return "allow"
    return "flag" if route.policy.output == "flag" else "block"


def stream_view(results: list[GuardResult], action: str) -> SafetyView:
    return _view(results, action) if results else SKIPPED
