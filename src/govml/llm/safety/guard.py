"""The prompt guard and the output filter: normalisation, rules, classifier heads and
personal data combined into one :class:`GuardResult` per text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from govml.llm.safety.classifier import (
    DEFAULT_HEAD,
    SENTENCE_CATEGORIES,
    GuardHead,
    load_head,
    text_sentences,
    text_windows,
)
from govml.llm.safety.leak import DEFAULT_MIN_WORDS, find_leaks
from govml.llm.safety.normalise import NormalisedText, normalise
from govml.llm.safety.result import GuardResult, combine, scaled_risk
from govml.llm.safety.rules import match_rules
from govml.pii import ENTITY_TYPES, PiiFinding, allow_terms, entity_types, find_pii, replace_spans

# A rule match is strong evidence but not proof (rules cannot read intent): high risk,
# not the maximum. Hidden text alone is suspicious, not unsafe: it lowers the score
# without reaching the default threshold.
RULE_RISK = 0.9
OBFUSCATION_RISK = 0.3
LEAK_RISK = 0.9
LEAK_LABEL = "SYSTEM_PROMPT"


def _resolve_head(head: GuardHead | Path | str | None) -> GuardHead:
    if isinstance(head, GuardHead):
        return head
    return load_head(Path(head) if head is not None else DEFAULT_HEAD)


def _check_threshold(threshold: float) -> float:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return float(threshold)


_T = TypeVar("_T")


def _overlap_pool() -> ThreadPoolExecutor:
    """Threads that look for personal data while the calling thread encodes."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="govml-guard")


def _beside_pii(
    pool: ThreadPoolExecutor | None,
    entities: Sequence[str],
    allow: Sequence[str],
    texts: Sequence[str],
    scoring: Callable[[], _T],
) -> tuple[_T, list[list[PiiFinding]]]:
    """Run ``scoring`` (the encoder) on this thread while a pool thread looks for personal
    data in ``texts`` (no pool: no personal-data check).

    This way round because onnxruntime releases the GIL for its whole run and spaCy
    holds it: a pool thread that had to encode waited 1-3 ms for the GIL before it could
    start, while this thread ran spaCy (measured in docs/llm-gateway.md)."""
    if pool is None:
        return scoring(), [[] for _ in texts]
    pending = pool.submit(lambda: [find_pii(t, entities=entities, allow=allow) for t in texts])
    try:
        scored = scoring()
    finally:
        findings = pending.result()
    return scored, findings


class _HeadScorer:
    """Embeds texts window by window and scores them with a :class:`GuardHead`."""

    def __init__(self, head: GuardHead, embedder: object | None, categories: Sequence[str]):
        from govml.llm.embedding import Embedder, get_embedder

        self.head = head
        self.embedder: Embedder = embedder if embedder is not None else get_embedder(head.embedder)  # type: ignore[assignment]
        if self.embedder.dim != head.dim:
            raise ValueError(f"the guard head expects {head.dim}-d embeddings, the embedder gives {self.embedder.dim}")
        unknown = sorted(set(categories) - set(head.categories))
        if unknown:
            raise ValueError(f"the guard head has no category {unknown}; it has {head.categories}")
        self.columns = [head.categories.index(c) for c in categories]
        self.categories = tuple(categories)
        self._sentence_mask = np.array([c in SENTENCE_CATEGORIES for c in self.categories])

    def probabilities(
        self, texts: Sequence[list[str]], sentences: Sequence[list[str]] | None = None
    ) -> list[dict[str, float]]:
        """Highest probability over each text's windows, per category; ``sentences``
        (one list per text) count only for :data:`SENTENCE_CATEGORIES`."""
        extra: list[list[str]] = [[] for _ in texts] if sentences is None else list(sentences)
        if not any(texts) and not any(extra):
            return [{} for _ in texts]
        window_risks = self._risks([w for windows in texts for w in windows])
        # sentences are encoded apart from the windows: in one batch they would be padded
        # to a window's length
        sentence_risks = self._risks([s for sents in extra for s in sents])
        out: list[dict[str, float]] = []
        w_start = s_start = 0
        for windows, sents in zip(texts, extra, strict=True):
            block = window_risks[w_start : w_start + len(windows)]
            w_start += len(windows)
            top = block.max(axis=0) if len(block) else np.zeros(len(self.columns))
            if sents:
                by_sentence = sentence_risks[s_start : s_start + len(sents)].max(axis=0)
                s_start += len(sents)
                top = np.where(self._sentence_mask, np.maximum(top, by_sentence), top)
            out.append({c: float(v) for c, v in zip(self.categories, top, strict=True)})
        return out

    def _risks(self, pieces: list[str]) -> np.ndarray:
        if not pieces:
            return np.zeros((0, len(self.columns)), dtype=np.float32)
        return self.head.risks(self.embedder.encode(pieces))[:, self.columns]

    def layer_risk(self, probabilities: dict[str, float]) -> tuple[float, list[str]]:
        """Scaled risk of the worst category and the categories past their threshold."""
        thresholds = {c: float(self.head.thresholds[i]) for c, i in zip(self.categories, self.columns, strict=True)}
        scaled = {c: scaled_risk(p, thresholds[c]) for c, p in probabilities.items()}
        fired = [c for c, p in probabilities.items() if p >= thresholds[c]]
        return max(scaled.values(), default=0.0), fired


class PromptGuard:
    """Checks a prompt: normalise -> rules -> classifier heads, plus personal data.

    ``threshold``: flag when the safety score falls below it (0.5 puts each head at its
    trained threshold). Layers can be switched off to measure each one alone.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        head: GuardHead | Path | str | None = None,
        embedder: object | None = None,
        use_rules: bool = True,
        use_classifier: bool = True,
        detect_pii: bool = True,
        pii_entities: Sequence[str] = ENTITY_TYPES,
        pii_allow: Sequence[str] = (),
    ) -> None:
        self.threshold = _check_threshold(threshold)
        self.use_rules = use_rules
        self.pii_entities = entity_types(pii_entities)
        self.pii_allow = allow_terms(pii_allow)
        self.detect_pii = detect_pii and bool(self.pii_entities)  # no types: nothing to look for
        self._scorer: _HeadScorer | None = None
        if use_classifier:
            loaded = _resolve_head(head)
            self._scorer = _HeadScorer(loaded, embedder, loaded.categories)
        self._pool = _overlap_pool()

    @property
    def embedder(self) -> object | None:
        """The encoder the classifier heads read (None with the classifier off): vectors
        passed to :meth:`check` must come from it."""
        return self._scorer.embedder if self._scorer is not None else None

    def close(self) -> None:
        """Stop the threads that look for personal data (the guard is unusable after)."""
        self._pool.shutdown(wait=True)

    def check(self, text: str, *, embedding: np.ndarray | None = None) -> GuardResult:
        """Check one prompt. ``embedding`` (the prompt's vector from the same encoder, e.g.
        computed for the semantic cache) skips re-encoding a short, plain prompt."""
        return self.check_batch([text], embeddings=None if embedding is None else [embedding])[0]

    def check_batch(
        self,
        texts: Sequence[str],
        *,
        embeddings: Sequence[np.ndarray] | np.ndarray | None = None,
        encode: Callable[[list[str]], Sequence[np.ndarray] | np.ndarray | None] | None = None,
    ) -> list[GuardResult]:
        """Check several prompts, encoding all their windows in one call.

        ``embeddings``: one vector per text from the guard's encoder. ``encode``: a
        function giving them (e.g. the semantic cache's, which keeps them), called while
        the guard looks for personal data; when it gives None the guard encodes."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("check_batch() takes a list of strings")
        normalised = [normalise(t) for t in texts]

        def scoring() -> list[dict[str, float]]:
            vectors = embeddings
            if vectors is None and encode is not None:
                vectors = encode(list(texts))
            return self._probabilities(normalised, vectors)

        pool = self._pool if self.detect_pii else None
        probabilities, findings = _beside_pii(pool, self.pii_entities, self.pii_allow, texts, scoring)
        return [
            self._result(t, n, p, f)
            for t, n, p, f in zip(texts, normalised, probabilities, findings, strict=True)
        ]

    def _probabilities(
        self, normalised: list[NormalisedText], embeddings: Sequence[np.ndarray] | np.ndarray | None
    ) -> list[dict[str, float]]:
        if self._scorer is None:
            return [{} for _ in normalised]
        windows = [[w for part in (n.text, *n.payloads) for w in text_windows(part)] for n in normalised]
        sentences = [[s for part in (n.text, *n.payloads) for s in text_sentences(part)] for n in normalised]
        if embeddings is None:
            return self._scorer.probabilities(windows, sentences)
        out: list[dict[str, float]] = []
        for n, w, s, vector in zip(normalised, windows, sentences, embeddings, strict=True):
            if len(w) == 1 and not s and n.text == n.original:
                risks = self._scorer.head.risks(np.asarray(vector).reshape(1, -1))[0]
                out.append(
                    {c: float(risks[i]) for c, i in zip(self._scorer.categories, self._scorer.columns, strict=True)}
                )
            else:
                out.extend(self._scorer.probabilities([w], [s]))
        return out

    def _result(
        self,
        text: str,
        normalised: NormalisedText,
        probabilities: dict[str, float],
        findings: list[PiiFinding],
    ) -> GuardResult:
        layers: dict[str, float] = {"normalisation": OBFUSCATION_RISK if normalised.obfuscated else 0.0}
        categories: list[str] = []
        matches = match_rules(normalised.for_checking) if self.use_rules else []
        if self.use_rules:
            layers["rules"] = RULE_RISK if matches else 0.0
            categories.extend(dict.fromkeys(m.category for m in matches))
        if self._scorer is not None:
            layers["classifier"], fired = self._scorer.layer_risk(probabilities)
            categories.extend(c for c in fired if c not in categories)
        score = combine(layers)
        flagged = score < self.threshold
        if findings:
            categories.append("pii")
        return GuardResult(
            safety_score=score,
            flagged=flagged,
            categories=categories,
            layers=layers,
            category_scores=probabilities,
            rule_matches=[m.rule for m in matches],
            normalisation=list(normalised.changes),
            pii=findings,
            redacted_text=_redact(text, findings, []),
        )


def _redact(text: str, findings: list[PiiFinding], leaks: list[tuple[int, int]]) -> str:
    spans = [(f.start, f.end, f.entity_type) for f in findings]
    spans += [(start, end, LEAK_LABEL) for start, end in leaks]
    return replace_spans(text, spans) if spans else text


class OutputFilter:
    """Checks a model's answer for toxicity, personal data and system-prompt leaks
    (``leak_min_words`` or more consecutive words of the system prompt)."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        head: GuardHead | Path | str | None = None,
        embedder: object | None = None,
        categories: Sequence[str] = ("toxic",),
        use_classifier: bool = True,
        detect_pii: bool = True,
        pii_entities: Sequence[str] = ENTITY_TYPES,
        pii_allow: Sequence[str] = (),
        leak_min_words: int = DEFAULT_MIN_WORDS,
    ) -> None:
        self.threshold = _check_threshold(threshold)
        self.pii_entities = entity_types(pii_entities)
        self.pii_allow = allow_terms(pii_allow)
        self.detect_pii = detect_pii and bool(self.pii_entities)  # no types: nothing to look for
        self.leak_min_words = leak_min_words
        self._scorer = _HeadScorer(_resolve_head(head), embedder, categories) if use_classifier else None
        self._pool = _overlap_pool()

    def close(self) -> None:
        """Stop the threads that look for personal data (the filter is unusable after)."""
        self._pool.shutdown(wait=True)

    def check(self, text: str, *, system_prompt: str | None = None) -> GuardResult:
        """Check one answer (or the window of a streamed answer)."""
        if not isinstance(text, str):
            raise TypeError("check() takes a string")
        layers: dict[str, float] = {}
        categories: list[str] = []
        probabilities: dict[str, float] = {}
        scorer = self._scorer
        pool = self._pool if self.detect_pii else None
        scored, (findings,) = _beside_pii(
            pool,
            self.pii_entities,
            self.pii_allow,
            [text],
            lambda: scorer.probabilities([text_windows(text)], [text_sentences(text)]) if scorer else None,
        )
        if scorer is not None and scored is not None:
            probabilities = scored[0]
            layers["classifier"], categories = scorer.layer_risk(probabilities)
        leaks = find_leaks(text, system_prompt, min_words=self.leak_min_words)
        layers["leak"] = LEAK_RISK if leaks else 0.0
        if leaks:
            categories.append("system_prompt_leak")
        if findings:
            categories.append("pii")
        score = combine(layers)
        return GuardResult(
            safety_score=score,
            flagged=score < self.threshold,
            categories=categories,
            layers=layers,
            category_scores=probabilities,
            pii=findings,
            redacted_text=_redact(text, findings, leaks),
        )


class StreamingOutputFilter:
    """Checks a streamed answer as it grows: every ``check_every`` new characters the
    last ``window`` characters are checked, so a failure ends the stream early; the
    window overlaps the previous one, so a leak or a toxic phrase split across two
    chunks is still seen whole."""

    def __init__(
        self,
        output_filter: OutputFilter,
        *,
        system_prompt: str | None = None,
        window: int = 1000,
        check_every: int = 200,
    ) -> None:
        if not 0 < check_every < window:
            raise ValueError("check_every must be positive and smaller than window")
        self._filter = output_filter
        self._system_prompt = system_prompt
        self._window = window
        self._every = check_every
        self._parts: list[str] = []
        self._length = 0
        self._checked_at = 0

    @property
    def text(self) -> str:
        """Everything fed so far."""
        return "".join(self._parts)

    def _check_tail(self) -> GuardResult:
        text = self.text
        tail = text[-self._window :]
        if len(text) > self._window and " " in tail:
            tail = tail[tail.index(" ") + 1 :]  # do not start mid-word
        self._checked_at = self._length
        return self._filter.check(tail, system_prompt=self._system_prompt)

    def feed(self, delta: str) -> GuardResult | None:
        """Add a chunk; return a result when a check ran (stop the stream if it is
        flagged), ``None`` when not enough new text has arrived yet."""
        self._parts.append(delta)
        self._length += len(delta)
        if self._length - self._checked_at >= self._every:
            return self._check_tail()
        return None

    def finish(self) -> GuardResult:
        """Check what has not been checked yet (call once the stream ends)."""
        return self._check_tail()
