"""System-prompt leaks: spans of an answer that repeat a long run of the system
prompt's words verbatim (case and punctuation ignored)."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
DEFAULT_MIN_WORDS = 8


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text))


def find_leaks(
    text: str, system_prompt: str | None, *, min_words: int = DEFAULT_MIN_WORDS
) -> list[tuple[int, int]]:
    """Character spans of ``text`` covered by runs of at least ``min_words`` consecutive
    words that also occur, in that order, in ``system_prompt``; merged and sorted."""
    if min_words < 2:
        raise ValueError("min_words must be at least 2")
    if not system_prompt:
        return []
    secret = [m.group(0).casefold() for m in _words(system_prompt)]
    if len(secret) < min_words:
        return []
    grams = {tuple(secret[i : i + min_words]) for i in range(len(secret) - min_words + 1)}
    matches = _words(text)
    words = [m.group(0).casefold() for m in matches]
    spans: list[tuple[int, int]] = []
    for i in range(len(words) - min_words + 1):
        if tuple(words[i : i + min_words]) in grams:
            start, end = matches[i].start(), matches[i + min_words - 1].end()
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
    return spans


def leaked_words(text: str, spans: list[tuple[int, int]]) -> int:
    """Number of words of ``text`` inside ``spans``."""
    return sum(len(_WORD.findall(text[start:end])) for start, end in spans)
