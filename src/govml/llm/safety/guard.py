"""The prompt guard and the output filter: normalisation, rules, classifier heads and
personal data combined into one :class:`GuardResult` per text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
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
from govml.llm.safety.dataset import TOXIC
from govml.llm.safety.leak import DEFAULT_MIN_WORDS, find_leaks
from govml.llm.safety.lexical import DEFAULT_TOXICITY_HEAD, LexicalHead, load_lexical
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
#: what scores the ``toxic`` category: the n-gram model (default, measured better and
#: about 15 times cheaper, see govml.llm.safety.lexical) or the MiniLM head
TOXICITY_MODELS = ("lexical", "embedding")


def _resolve_head(head: GuardHead | Path | str | None) -> GuardHead:
    if isinstance(head, GuardHead):
        return head
    return load_head(Path(head) if head is not None else DEFAULT_HEAD)


@cache
def _default_lexical() -> LexicalHead:
    return load_lexical(DEFAULT_TOXICITY_HEAD)


def _resolve_lexical(model: LexicalHead | Path | str | None) -> LexicalHead:
    if isinstance(model, LexicalHead):
        return model
    return _default_lexical() if model is None else load_lexical(Path(model))


def _check_threshold(threshold: float) -> float:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return float(threshold)


_T = TypeVar("_T")


class _Check:
    """What the prompt guard and the output filter share: the flag threshold, the
    personal-data settings, and the threads that look for personal data while the
    calling thread scores."""

    def __init__(
        self, threshold: float, detect_pii: bool, pii_entities: Sequence[str], pii_allow: Sequence[str]
    ) -> None:
        self.threshold = _check_threshold(threshold)
        self.pii_entities = entity_types(pii_entities)
        self.pii_allow = allow_terms(pii_allow)
        self.detect_pii = detect_pii and bool(self.pii_entities)  # no types: nothing to look for
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="govml-guard")

    def close(self) -> None:
        """Stop the threads that look for personal data (the check is unusable after)."""
        self._pool.shutdown(wait=True)

    def _beside_pii(self, texts: Sequence[str], scoring: Callable[[], _T]) -> tuple[_T, list[list[PiiFinding]]]:
        """Run ``scoring`` (the encoder) on this thread while a pool thread looks for
        personal data in ``texts`` (none looked for without ``detect_pii``).

        This way round because onnxruntime releases the GIL for its whole run and spaCy
        holds it: a pool thread that had to encode waited 1-3 ms for the GIL before it could
        start, while this thread ran spaCy (measured in docs/llm-gateway.md)."""
        if not self.detect_pii:
            return scoring(), [[] for _ in texts]
        entities, allow = self.pii_entities, self.pii_allow
        pending = self._pool.submit(lambda: [find_pii(t, entities=entities, allow=allow) for t in texts])
        try:
            scored = scoring()
        finally:
            findings = pending.result()
        return scored, findings


def _layer_risk(probabilities: dict[str, float], thresholds: dict[str, float]) -> tuple[float, list[str]]:
    """Scaled risk of the worst category and the categories past their threshold."""
    scaled = {c: scaled_risk(p, thresholds[c]) for c, p in probabilities.items()}
    fired = [c for c, p in probabilities.items() if p >= thresholds[c]]
    return max(scaled.values(), default=0.0), fired


def _worst_piece(risks: np.ndarray, counts: Sequence[int], width: int) -> list[np.ndarray]:
    """Per text, the highest risk over its ``counts[i]`` consecutive rows of ``risks``
    (zeros for a text with no rows)."""
    out, start = [], 0
    for n in counts:
        block = risks[start : start + n]
        start += n
        out.append(block.max(axis=0) if n else np.zeros(width))
    return out


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
        self.thresholds = {c: float(head.thresholds[i]) for c, i in zip(self.categories, self.columns, strict=True)}
        self._sentence_mask = np.array([c in SENTENCE_CATEGORIES for c in self.categories])

    def probabilities(
        self,
        texts: Sequence[list[str]],
        sentences: Sequence[list[str]],
        vectors: Sequence[np.ndarray | None] | None = None,
    ) -> list[dict[str, float]]:
        """Highest probability over each text's windows, per category; ``sentences``
        (one list per text) count only for :data:`SENTENCE_CATEGORIES`. A text with a
        vector in ``vectors`` (its one window's, already encoded) is not encoded again."""
        given = list(vectors) if vectors is not None else [None] * len(texts)
        windows = [[] if v is not None else w for w, v in zip(texts, given, strict=True)]
        window_risks = self._risks([w for ws in windows for w in ws])
        # sentences are encoded apart from the windows: in one batch they would be padded
        # to a window's length
        sentence_risks = self._risks([s for sents in sentences for s in sents])
        width = len(self.columns)
        by_window = _worst_piece(window_risks, [len(ws) for ws in windows], width)
        by_sentence = _worst_piece(sentence_risks, [len(ss) for ss in sentences], width)
        out: list[dict[str, float]] = []
        for top, sentence_top, sents, vector in zip(by_window, by_sentence, sentences, given, strict=True):
            if vector is not None:
                top = self.head.risks(np.asarray(vector).reshape(1, -1))[0, self.columns]
            if sents:
                top = np.where(self._sentence_mask, np.maximum(top, sentence_top), top)
            out.append({c: float(v) for c, v in zip(self.categories, top, strict=True)})
        return out

    def _risks(self, pieces: list[str]) -> np.ndarray:
        if not pieces:
            return np.zeros((0, len(self.columns)), dtype=np.float32)
        return self.head.risks(self.embedder.encode(pieces))[:, self.columns]


class _LexicalScorer:
    """Scores texts window by window and sentence by sentence with the n-gram
    toxicity model (no encoder)."""

    def __init__(self, head: LexicalHead):
        self.head = head
        self.thresholds = {TOXIC: head.threshold}

    def probabilities(self, texts: Sequence[list[str]], sentences: Sequence[list[str]]) -> list[dict[str, float]]:
        pieces = [[*w, *s] for w, s in zip(texts, sentences, strict=True)]
        risks = self.head.risks([p for ps in pieces for p in ps]).reshape(-1, 1)
        return [{TOXIC: float(top[0])} for top in _worst_piece(risks, [len(ps) for ps in pieces], 1)]


class _Classifier:
    """The classifier layer: MiniLM heads for some categories and, with
    ``toxicity="lexical"``, the n-gram model for ``toxic``."""

    def __init__(
        self,
        categories: Sequence[str] | None,
        *,
        head: GuardHead | Path | str | None,
        embedder: object | None,
        toxicity: str,
        toxicity_model: LexicalHead | Path | str | None,
    ) -> None:
        if toxicity not in TOXICITY_MODELS:
            raise ValueError(f"toxicity must be one of {TOXICITY_MODELS}, got {toxicity!r}")
        loaded = _resolve_head(head) if categories is None else None
        wanted = tuple(categories) if categories is not None else loaded.categories  # type: ignore[union-attr]
        lexical = toxicity == "lexical" and TOXIC in wanted
        on_vectors = [c for c in wanted if not (lexical and c == TOXIC)]
        if categories is None and not on_vectors:
            raise ValueError(
                "the guard head scores only 'toxic', which the n-gram model scores here; "
                "pass toxicity='embedding' to use the head"
            )
        self.heads = _HeadScorer(loaded or _resolve_head(head), embedder, on_vectors) if on_vectors else None
        self.lexical = _LexicalScorer(_resolve_lexical(toxicity_model)) if lexical else None
        self.thresholds = {
            **(self.heads.thresholds if self.heads else {}),
            **(self.lexical.thresholds if self.lexical else {}),
        }

    def probabilities(
        self,
        texts: Sequence[list[str]],
        sentences: Sequence[list[str]],
        vectors: Sequence[np.ndarray | None] | None = None,
    ) -> list[dict[str, float]]:
        out = self.heads.probabilities(texts, sentences, vectors) if self.heads else [{} for _ in texts]
        if self.lexical is not None:
            for scores, toxic in zip(out, self.lexical.probabilities(texts, sentences), strict=True):
                scores.update(toxic)
        return out

    def layer_risk(self, probabilities: dict[str, float]) -> tuple[float, list[str]]:
        return _layer_risk(probabilities, self.thresholds)


class PromptGuard(_Check):
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
        toxicity: str = "lexical",
        toxicity_model: LexicalHead | Path | str | None = None,
    ) -> None:
        super().__init__(threshold, detect_pii, pii_entities, pii_allow)
        self.use_rules = use_rules
        self._classifier = (
            _Classifier(None, head=head, embedder=embedder, toxicity=toxicity, toxicity_model=toxicity_model)
            if use_classifier
            else None
        )

    @property
    def embedder(self) -> object | None:
        """The encoder the classifier heads read (None with the classifier off): vectors
        passed to :meth:`check` must come from it."""
        heads = self._classifier.heads if self._classifier is not None else None
        return heads.embedder if heads is not None else None

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

        probabilities, findings = self._beside_pii(texts, scoring)
        return [
            self._result(t, n, p, f)
            for t, n, p, f in zip(texts, normalised, probabilities, findings, strict=True)
        ]

    def _probabilities(
        self, normalised: list[NormalisedText], embeddings: Sequence[np.ndarray] | np.ndarray | None
    ) -> list[dict[str, float]]:
        if self._classifier is None:
            return [{} for _ in normalised]
        windows = [[w for part in (n.text, *n.payloads) for w in text_windows(part)] for n in normalised]
        sentences = [[s for part in (n.text, *n.payloads) for s in text_sentences(part)] for n in normalised]
        vectors = None
        if embeddings is not None:
            # a given vector stands for the text only when the text is its one window
            vectors = [
                v if len(w) == 1 and not s and n.text == n.original else None
                for n, w, s, v in zip(normalised, windows, sentences, embeddings, strict=True)
            ]
        return self._classifier.probabilities(windows, sentences, vectors)

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
        if self._classifier is not None:
            layers["classifier"], fired = self._classifier.layer_risk(probabilities)
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


class OutputFilter(_Check):
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
        toxicity: str = "lexical",
        toxicity_model: LexicalHead | Path | str | None = None,
    ) -> None:
        super().__init__(threshold, detect_pii, pii_entities, pii_allow)
        self.leak_min_words = leak_min_words
        self._classifier = (
            _Classifier(categories, head=head, embedder=embedder, toxicity=toxicity, toxicity_model=toxicity_model)
            if use_classifier
            else None
        )

    def check(self, text: str, *, system_prompt: str | None = None) -> GuardResult:
        """Check one answer (or the window of a streamed answer)."""
        if not isinstance(text, str):
            raise TypeError("check() takes a string")
        layers: dict[str, float] = {}
        categories: list[str] = []
        probabilities: dict[str, float] = {}
        scorer = self._classifier
        scored, (findings,) = self._beside_pii(
            [text], lambda: scorer.probabilities([text_windows(text)], [text_sentences(text)]) if scorer else None
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
