"""Personal-data detection with the real Presidio engine and packaged spaCy model."""

from __future__ import annotations

from random import Random

import pytest

from govml.pii import (
    PiiFinding,
    _may_hold_person,
    _plausible_person,
    find_pii,
    redact,
    redact_pii,
    replace_spans,
    scan_values,
)


def _types(text: str) -> set[str]:
    return {f.entity_type for f in find_pii(text)}


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("Write to john.smith@example.com about the invoice", "EMAIL_ADDRESS"),
        ("My phone number is 415-555-0132, call after six", "PHONE_NUMBER"),
        ("Charge it to card 4111 1111 1111 1111 please", "CREDIT_CARD"),
        ("My ssn is 536-22-8726", "US_SSN"),
        ("Pay into GB82 WEST 1234 5698 7654 32", "IBAN_CODE"),
        ("The database listens on 192.168.1.20", "IP_ADDRESS"),
        ("My name is John Smith and I need a cover letter", "PERSON"),
        ("Hello, I am Maria Garcia from Madrid", "PERSON"),
    ],
)
def test_finds_each_entity_type(text: str, entity: str) -> None:
    assert entity in _types(text)


@pytest.mark.parametrize(
    "text",
    [
        "I have 3 apples and 42 pears",
        "Paris is nice",
        "In 1999, 42 people came to the meeting",
        "Git is a version control system",
        "Gradio lets you build demos; Parquet stores columns",
        "The order number is 12345678",
        "How do I protect my server from SQL injection?",
        "",
    ],
)
def test_no_false_positives_on_plain_text(text: str) -> None:
    assert find_pii(text) == []


def test_findings_carry_spans_and_scores() -> None:
    text = "Email anna.k@example.org today"
    [finding] = find_pii(text)
    assert finding == PiiFinding("EMAIL_ADDRESS", 6, 24, finding.score, "anna.k@example.org")
    assert text[finding.start : finding.end] == finding.text
    assert 0.5 <= finding.score <= 1.0


def test_redact_replaces_with_entity_placeholders() -> None:
    text = "I am John Smith, reach me at john.smith@example.com or 415-555-0132."
    redacted, findings = redact_pii(text)
    assert redacted == "I am <PERSON>, reach me at <EMAIL_ADDRESS> or <PHONE_NUMBER>."
    assert [f.entity_type for f in findings] == ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"]
    assert redact(text, findings) == redacted


def test_replace_spans_skips_overlaps() -> None:
    assert replace_spans("abcdef", [(0, 3, "X"), (2, 4, "Y"), (4, 6, "Z")]) == "<X>d<Z>"


def test_entity_subset_and_unknown_type() -> None:
    text = "Mail me at a.b@example.com, I am John Smith"
    assert _types(text) == {"EMAIL_ADDRESS", "PERSON"}
    assert {f.entity_type for f in find_pii(text, entities=["EMAIL_ADDRESS"])} == {"EMAIL_ADDRESS"}
    with pytest.raises(ValueError, match="no threshold"):
        find_pii(text, entities=["PASSPORT"])


def test_bad_input_is_rejected() -> None:
    with pytest.raises(TypeError):
        find_pii(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        scan_values(["a"], sample=0)


def test_scan_values_reports_fraction_per_type() -> None:
    values = ["anna@example.com", "bob@example.org", "no contact", None, "", "call 415-555-0132"]
    shares = scan_values(values)
    assert shares["EMAIL_ADDRESS"] == pytest.approx(2 / 4)
    assert shares["PHONE_NUMBER"] == pytest.approx(1 / 4)
    assert scan_values(["plain", "words only"]) == {}


def test_scan_values_samples_deterministically() -> None:
    values = [f"user{i}@example.com" if i % 2 else f"row {i}" for i in range(60)]
    first = scan_values(values, sample=20, seed=3)
    assert first == scan_values(values, sample=20, seed=3)
    assert 0 < first["EMAIL_ADDRESS"] < 1


# --- the NER runs only when a PERSON could be kept ----------------------------------

_GATE_WORDS = ["John", "smith", "Dr", "my name is", "The", "Hub", "é", "Émile", "O'Neil", "x-Ray", "I", "hi"]
_GATE_GLUE = [" ", "  ", "\n", ", ", ". ", "-", "'", "(", "3", "_"]


def _gate_texts(count: int, seed: int = 0) -> list[str]:
    rng = Random(seed)
    return [
        "".join(rng.choice(_GATE_WORDS) + rng.choice(_GATE_GLUE) for _ in range(rng.randint(1, 6)))
        for _ in range(count)
    ]


def test_ner_gate_never_skips_a_span_the_person_filter_keeps() -> None:
    # whatever span spaCy tagged, _plausible_person must reject it when the gate is shut
    for text in _gate_texts(1000):
        if _may_hold_person(text):
            continue
        for start in range(len(text)):
            for end in range(start + 1, len(text) + 1):
                assert not _plausible_person(text, start, end), (text, text[start:end])


@pytest.mark.parametrize(
    ("text", "gate"),
    [
        ("My name is John Smith", True),
        ("Ask Mary about it", True),
        ("Please tell Alice Johnson the results", True),
        ("The capital of France is Paris.", False),
        ("how do i sort a list in python?", False),
        ("Paris is nice", False),
    ],
)
def test_ner_gate_examples(text: str, gate: bool) -> None:
    assert _may_hold_person(text) is gate


def test_gated_engine_matches_running_the_ner_always(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [
        "The capital of France is Paris.",
        "She called 212-555-0198 twice and wrote to ann@example.org",
        "My ssn is 536-22-8726",
        "Please tell Alice Johnson the results",
        "Gradio lets you build demos; Parquet stores columns",
    ]
    gated = [find_pii(t) for t in texts]
    monkeypatch.setattr("govml.pii._may_hold_person", lambda text: True)
    assert [find_pii(t) for t in texts] == gated


def test_the_ner_runs_only_when_a_person_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import govml.pii

    gated: list[str] = []
    real_gate = govml.pii._may_hold_person
    monkeypatch.setattr(govml.pii, "_may_hold_person", lambda text: gated.append(text) or real_gate(text))
    nlp = govml.pii.get_engine().nlp_engine._pipeline  # type: ignore[attr-defined]
    ner_runs: list[str] = []
    real_get_pipe = nlp.get_pipe
    monkeypatch.setattr(nlp, "get_pipe", lambda name: ner_runs.append(name) or real_get_pipe(name))
    text = "Call Alice Johnson on 212-555-0198"
    assert [f.entity_type for f in find_pii(text)] == ["PERSON", "PHONE_NUMBER"]
    assert gated == [text] and ner_runs == ["ner"]  # the gate is read once
    gated.clear()
    ner_runs.clear()
    assert [f.entity_type for f in find_pii(text, entities=["PHONE_NUMBER"])] == ["PHONE_NUMBER"]
    assert gated == [] and ner_runs == []  # no PERSON asked for: no NER


# --- Presidio is asked only for the types a text could hold -------------------------

_SKIP_TEXTS = [
    "The capital of France is Paris.",
    "how do i sort a list in python?",
    "Note: the server is down; ask the admin.",
    "Reach me at ann@example.org or on +44 20 7946 0958",
    "Card 4111 1111 1111 1111, expiry 12/29",
    "My ssn is 536-22-8726",
    "Pay into GB82 WEST 1234 5698 7654 32",
    "The host is fe80::1ff:fe23:4567:890a and the loopback ::1",
    "Route traffic to abcd:ef:abcd:ef:abcd:ef:abcd:ef now",
    "Set the listener to :: so it binds everywhere",
    "Bind to 10.0.0.7 on port 8080",
    "Dr Smith said hello to Anna Berg in 2021",
    "NHS number 943 476 5919 belongs to the patient",
    "Ｃall ５５５-０１９８ today",
]


def test_asking_only_for_possible_types_finds_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from govml.pii import ENTITY_TYPES, _possible_entities

    texts = _SKIP_TEXTS + _gate_texts(40, seed=5)
    narrowed = [find_pii(t) for t in texts]
    assert any(narrowed), "the texts must hold findings for this test to mean anything"
    monkeypatch.setattr("govml.pii._possible_entities", lambda text, entities: list(entities))
    assert [find_pii(t) for t in texts] == narrowed
    # the conditions themselves: each sample above that holds a type is let through for it
    assert "IP_ADDRESS" in _possible_entities("fe80::1", ENTITY_TYPES)
    assert "IP_ADDRESS" in _possible_entities("listen on ::", ENTITY_TYPES)
    assert "IP_ADDRESS" in _possible_entities("abcd:ef:abcd:ef:abcd:ef:abcd:ef", ENTITY_TYPES)
    assert _possible_entities("Note: the server is down", ENTITY_TYPES) == []


def test_prose_with_nothing_to_find_skips_presidio(monkeypatch: pytest.MonkeyPatch) -> None:
    import govml.pii

    calls: list[list[str]] = []
    engine = govml.pii.get_engine()

    class Spy:
        def analyze(self, *, text: str, language: str, entities: list[str]) -> object:
            calls.append(entities)
            return engine.analyze(text=text, language=language, entities=entities)

    monkeypatch.setattr(govml.pii, "get_engine", lambda: Spy())
    assert find_pii("The capital of France is Paris.") == []
    assert find_pii("how do i sort a list in python?") == []
    assert calls == []
    assert [f.entity_type for f in find_pii("Write to ann@example.org")] == ["EMAIL_ADDRESS"]
    assert calls == [["EMAIL_ADDRESS"]]


def test_allowed_terms_are_not_personal_data() -> None:
    text = "Files live in Google Cloud Storage; ask John Smith or mail ann@example.org"
    found = {f.text for f in find_pii(text)}
    assert found == {"Cloud Storage", "John Smith", "ann@example.org"}
    # the whole product name, in any case, covers spaCy's partial span
    allowed = {f.text for f in find_pii(text, allow=["google cloud storage"])}
    assert allowed == {"John Smith", "ann@example.org"}
    # a term covers only findings inside it: "Storage" does not cover "Cloud Storage"
    assert {f.text for f in find_pii(text, allow=["Storage", "Smith"])} == found
    with pytest.raises(TypeError, match="list of terms"):
        find_pii(text, allow="Google Cloud Storage")
