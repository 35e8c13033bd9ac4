"""The second check of a cache hit: do two prompts agree on the details that matter?

Embeddings place "How do I delete a column?" and "How do I delete a row?" close
together; a cached answer to one is wrong for the other. Before a hit is served, the
new prompt and the cached prompt must agree on
- numbers (digits and number words, compared as values),
- negation (both negated or neither), and
- key terms: code identifiers (``snake_case``, ``CamelCase``, ``call()``, backticked
  names) and acronyms that one prompt names must appear in the other.
Pure functions only; measured on ``paraphrase_pairs.json`` in docs/llm-cache.md.

:func:`token_agreement` is the token check that follows: how well each prompt's tokens
are covered by the other's (BERTScore's greedy matching of contextual token vectors,
the lower of recall and precision), which catches a cached prompt that says less, or
more, than the new one although their sentence vectors are close.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

__all__ = ["Agreement", "key_terms", "negated", "numbers", "prompts_agree", "token_agreement"]

_NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
    "thousand": "1000", "million": "1000000", "billion": "1000000000",
    "twice": "2", "double": "2", "half": "0.5", "dozen": "12",
}  # fmt: skip
# "one" is left out on purpose: "in one go", "one of", "the one that" are not counts
_NEGATIONS = {"not", "no", "never", "cannot", "nothing", "none", "nobody", "neither", "nor"}
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:\.\d+)?%?(?![\w])")
_CODE_SPAN = re.compile(r"`+([^`]+)`+")
_IDENTIFIER = re.compile(
    r"\b(?:[A-Za-z_]\w*_\w+"  # snake_case
    r"|[a-z]+[A-Z]\w*"  # camelCase
    r"|[A-Z][a-z0-9]+[A-Z]\w*"  # CamelCase
    r"|[A-Z]{2,}[a-z]*s?"  # acronyms: NLP, URL, URLs
    r"|\w+(?=\(\)))"  # call()
)
_CODE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


@dataclass(frozen=True)
class Agreement:
    """The verdict of :func:`prompts_agree`; ``reason`` names the first disagreement."""

    agree: bool
    reason: str = ""


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return text.replace("\u2019", "'").replace("\u2018", "'")


def _canonical_number(raw: str) -> str:
    value = raw.rstrip("%").lstrip("+").replace(",", "")
    try:
        number = float(value)
    except ValueError:
        return raw
    text = f"{number:g}" if abs(number) < 1e15 else value
    return text + ("%" if raw.endswith("%") else "")


def numbers(text: str) -> frozenset[str]:
    """The numbers a text states, canonical (``"2"``, ``"2.5"``, ``"10%"``); code excluded."""
    text = _CODE_SPAN.sub(" ", _normalise(text))
    found = {_canonical_number(m) for m in _NUMBER.findall(text)}
    found |= {_NUMBER_WORDS[w] for w in _WORD.findall(text.lower()) if w in _NUMBER_WORDS}
    return frozenset(found)


def negated(text: str) -> bool:
    """Whether the text contains a negation cue (not, n't, never, no, cannot, ...)."""
    words = _WORD.findall(_normalise(text).lower())
    return any(w in _NEGATIONS or w.endswith("n't") for w in words)


def key_terms(text: str) -> frozenset[str]:
    """Identifiers and acronyms a text names, lower-cased."""
    text = _normalise(text)
    terms = {t.lower() for t in _IDENTIFIER.findall(text)}
    for span in _CODE_SPAN.findall(text):
        terms |= {t.lower() for t in _CODE_TOKEN.findall(span)}
    return frozenset(terms)


def _missing_terms(terms: frozenset[str], other_text: str) -> list[str]:
    haystack = re.sub(r"[^a-z0-9]+", "", _normalise(other_text).lower())
    return sorted(t for t in terms if re.sub(r"[^a-z0-9]+", "", t) not in haystack)


def prompts_agree(prompt: str, cached_prompt: str) -> Agreement:
    """Whether a cached answer to ``cached_prompt`` may answer ``prompt``."""
    a, b = numbers(prompt), numbers(cached_prompt)
    if a != b:
        return Agreement(False, f"numbers differ ({sorted(a)} vs {sorted(b)})")
    if negated(prompt) != negated(cached_prompt):
        return Agreement(False, "one prompt is negated, the other is not")
    missing = _missing_terms(key_terms(prompt), cached_prompt)
    missing += _missing_terms(key_terms(cached_prompt), prompt)
    if missing:
        return Agreement(False, f"key terms differ ({', '.join(missing[:3])})")
    return Agreement(True)


def token_agreement(tokens: np.ndarray, cached_tokens: np.ndarray) -> float:
    """The lower of BERTScore recall and precision between two prompts' token vectors.

    Each argument is ``(tokens, dim)`` with unit rows (``TokenEncoder.encode_tokens``).
    Recall: the mean, over the new prompt's tokens, of the best cosine with a cached
    token; precision: the same the other way round. 1.0 when every token has a twin.
    """
    sims = np.asarray(tokens, dtype=np.float32) @ np.asarray(cached_tokens, dtype=np.float32).T
    return float(min(sims.max(axis=1).mean(), sims.max(axis=0).mean()))
