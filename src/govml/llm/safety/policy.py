"""What the gateway does with a guard result, per route: ``block``, ``redact`` or ``flag``.

- ``block``: anything flagged or any personal data stops the request.
- ``redact``: personal data (and, in answers, leaked system-prompt text) is replaced by
  placeholders and the text goes on; flagged content, which cannot be redacted, is blocked.
- ``flag``: the text goes on unchanged; the result is only reported.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel

from govml.llm.safety.result import GuardResult


class Policy(StrEnum):
    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"


class Decision(BaseModel):
    """The outcome: forward ``text`` (``allow``, ``redact``, ``flag``) or refuse (``block``)."""

    action: Literal["allow", "block", "redact", "flag"]
    text: str
    categories: list[str]
    reason: str | None = None

    @property
    def blocked(self) -> bool:
        return self.action == "block"


def apply_policy(result: GuardResult, policy: Policy | str, *, text: str) -> Decision:
    """Decide what happens to ``text`` (the prompt or answer that ``result`` checked)."""
    try:
        chosen = Policy(policy)
    except ValueError as exc:
        from govml.errors import ConfigError

        allowed = ", ".join(p.value for p in Policy)
        raise ConfigError(f"unknown safety policy {policy!r}; choose one of: {allowed}") from exc
    categories = list(result.categories)
    removable = result.redacted_text != text
    if not result.flagged and not removable:
        return Decision(action="allow", text=text, categories=categories)
    if chosen is Policy.FLAG:
        return Decision(action="flag", text=text, categories=categories, reason=_reason(result))
    if result.flagged or chosen is Policy.BLOCK:
        return Decision(action="block", text="", categories=categories, reason=_reason(result))
    return Decision(
        action="redact", text=result.redacted_text, categories=categories, reason=_reason(result)
    )


def _reason(result: GuardResult) -> str:
    names = ", ".join(result.categories) or "unsafe content"
    return f"content filter: {names} (safety score {result.safety_score:.2f})"
