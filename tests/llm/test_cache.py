"""The semantic cache with the real MiniLM encoder, real hnswlib and real SQLite."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from govml.errors import ConfigError
from govml.llm.cache import DEFAULT_THRESHOLD, CacheScope, SemanticCache
from govml.llm.cache.semantic import DEFAULT_TOKEN_THRESHOLD, TOKEN_CHECK_GATE
from govml.llm.embedding import Embedder, embedder_identity, get_embedder
from tests.llm.live import CountingEncoder

GREEDY = {"temperature": 0}


class Clock:
    """A settable clock, so TTL tests do not sleep."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder("minilm")


def scope(key: str = "key-a", **sampling: object) -> CacheScope:
    return CacheScope.for_request(api_key=key, model="m", sampling={**GREEDY, **sampling})


@pytest.fixture
def cache(tmp_path: Path, embedder: Embedder) -> SemanticCache:
    with SemanticCache(tmp_path, embedder=embedder) as c:
        yield c


def test_paraphrase_hits_and_unrelated_misses(cache: SemanticCache) -> None:
    s = scope()
    stored = cache.store(
        s, "How do I reset my password?", "Click 'Forgot password'.", {"total_tokens": 9}
    )
    assert stored is not None and stored.hits == 0
    found = cache.lookup(s, "How can I reset my password?")
    assert found.status == "hit" and found.hit
    assert found.entry is not None and found.entry.answer == "Click 'Forgot password'."
    assert found.entry.usage == {"total_tokens": 9}
    assert found.entry.hits == 1 and found.entry.last_hit is not None
    assert found.similarity is not None and found.similarity > 0.9
    missed = cache.lookup(s, "What is the boiling point of water at sea level?")
    assert missed.status == "miss" and missed.entry is None
    assert missed.similarity is not None and missed.similarity < 0.5
    assert "similarity" in missed.reason


def test_empty_scope_misses(cache: SemanticCache) -> None:
    found = cache.lookup(scope(), "anything at all")
    assert found.status == "miss" and found.similarity is None


def test_second_check_refuses_a_different_number(cache: SemanticCache) -> None:
    s = scope()
    cache.store(s, "Give me 3 reasons to learn Python", "1. ... 2. ... 3. ...")
    found = cache.lookup(s, "Give me 5 reasons to learn Python")
    assert found.similarity is not None and found.similarity >= cache.threshold
    assert found.status == "miss" and "numbers differ" in found.reason


def test_without_second_check_the_number_slips_through(tmp_path: Path, embedder: Embedder) -> None:
    with SemanticCache(tmp_path, embedder=embedder, second_check=False) as c:
        c.store(scope(), "Give me 3 reasons to learn Python", "three reasons")
        assert c.lookup(scope(), "Give me 5 reasons to learn Python").status == "hit"


def test_no_cross_tenant_hit_for_the_same_prompt(cache: SemanticCache) -> None:
    prompt = "What is our refund policy?"
    for i in range(5):
        cache.store(scope(f"key-{i}"), prompt, f"answer of tenant {i}")
    for i in range(5):
        found = cache.lookup(scope(f"key-{i}"), prompt)
        assert found.entry is not None and found.entry.answer == f"answer of tenant {i}"
    assert cache.lookup(scope("key-stranger"), prompt).status == "miss"


def test_model_system_prompt_and_sampling_separate_answers(cache: SemanticCache) -> None:
    base = scope()
    cache.store(base, "Summarise the plot of Hamlet.", "base answer")
    others = [
        CacheScope.for_request(api_key="key-a", model="other", sampling=GREEDY),
        CacheScope.for_request(api_key="key-a", model="m", system_prompt="pirate", sampling=GREEDY),
        scope(max_tokens=5),
    ]
    for other in others:
        assert cache.lookup(other, "Summarise the plot of Hamlet.").status == "miss"
    assert cache.lookup(base, "Summarise the plot of Hamlet.").status == "hit"


def test_sampled_requests_bypass_unless_configured(tmp_path: Path, embedder: Embedder) -> None:
    hot = CacheScope.for_request(api_key="k", model="m", sampling={"temperature": 0.7})
    default = CacheScope.for_request(api_key="k", model="m")  # OpenAI default temperature 1
    with SemanticCache(tmp_path / "a", embedder=embedder) as c:
        assert c.store(hot, "Write a poem", "roses") is None
        assert c.lookup(hot, "Write a poem").status == "bypass"
        assert c.lookup(default, "Write a poem").status == "bypass"
        assert len(c) == 0
    with SemanticCache(tmp_path / "b", embedder=embedder, cache_sampled=True) as c:
        assert c.store(hot, "Write a poem", "roses") is not None
        assert c.lookup(hot, "Write a poem").status == "hit"


def test_storing_the_same_prompt_replaces_the_answer(cache: SemanticCache) -> None:
    s = scope()
    first = cache.store(s, "What is 2 + 2?", "5")
    second = cache.store(s, "  What is 2 +   2? ", "4")
    assert first is not None and second is not None and first.id == second.id
    assert len(cache) == 1
    found = cache.lookup(s, "What is 2 + 2?")
    assert found.entry is not None and found.entry.answer == "4"


def test_entries_expire_after_the_ttl(tmp_path: Path, embedder: Embedder) -> None:
    clock = Clock()
    with SemanticCache(tmp_path, embedder=embedder, ttl_seconds=60, clock=clock) as c:
        c.store(scope(), "What time does the shop open?", "9am")
        c.store(scope("key-b"), "What time does the shop open?", "10am")
        clock.now += 30
        c.store(scope(), "Where is the shop?", "Main street")
        assert c.lookup(scope(), "What time does the shop open?").status == "hit"
        clock.now += 31
        found = c.lookup(scope(), "What time does the shop open?")
        assert found.status == "miss"
        assert len(c) == 2  # the expired entry met by the lookup is gone
        assert c.lookup(scope(), "Where is the shop?").hit
        assert c.purge_expired() == 1  # key-b's entry, never looked up
        assert len(c) == 1


def test_least_recently_used_entries_are_evicted(tmp_path: Path, embedder: Embedder) -> None:
    clock = Clock()
    prompts = ["How do I bake bread?", "What is the capital of Peru?", "How tall is Everest?"]
    with SemanticCache(tmp_path, embedder=embedder, max_entries=2, clock=clock) as c:
        for p in prompts[:2]:
            clock.now += 1
            c.store(scope(), p, p.upper())
        clock.now += 1
        assert c.lookup(scope(), prompts[0]).hit  # bread is now the most recently used
        clock.now += 1
        c.store(scope(), prompts[2], "8849 m")
        assert len(c) == 2
        assert c.lookup(scope(), prompts[1]).status == "miss"  # Peru was evicted
        assert c.lookup(scope(), prompts[0]).hit and c.lookup(scope(), prompts[2]).hit


def test_entries_survive_a_restart(tmp_path: Path, embedder: Embedder) -> None:
    with SemanticCache(tmp_path, embedder=embedder) as c:
        c.store(scope(), "How do I cancel my subscription?", "Settings > Billing")
        c.store(scope("key-b"), "How do I cancel my subscription?", "Call us")
    assert list((tmp_path / "index").iterdir())
    with SemanticCache(tmp_path, embedder=embedder) as c:
        assert len(c) == 2
        found = c.lookup(scope(), "How can I cancel my subscription?")
        assert found.entry is not None and found.entry.answer == "Settings > Billing"


def test_two_encoders_share_a_directory_without_mixing_vectors(tmp_path: Path, embedder: Embedder) -> None:
    # vectors of two encoders are not comparable: one index must never hold both, and
    # replicas on two encoders (a rolling upgrade) must not wipe each other's entries
    other = get_embedder("minilm-packaged-int8")
    with SemanticCache(tmp_path, embedder=other) as old:
        old.store(scope(), "How do I reset my password?", "Click 'Forgot password'.")
    with SemanticCache(tmp_path, embedder=embedder) as new:
        assert new.count(scope()) == 0
        assert new.lookup(scope(), "How do I reset my password?").status == "miss"
        new.store(scope(), "How do I reset my password?", "Use the reset link.")
        assert new.count(scope()) == 1 and len(new) == 2
    assert len(list((tmp_path / "index").glob("*.hnswlib"))) == 2  # an index per encoder's scope
    for encoder, answer in ((other, "Click 'Forgot password'."), (embedder, "Use the reset link.")):
        with SemanticCache(tmp_path, embedder=encoder) as c:  # reopened: both kept
            found = c.lookup(scope(), "How can I reset my password?")
            assert found.status == "hit" and found.entry is not None and found.entry.answer == answer


def test_index_is_repaired_after_a_crash(tmp_path: Path, embedder: Embedder) -> None:
    c = SemanticCache(tmp_path, embedder=embedder)
    c.store(scope(), "How do I cancel my subscription?", "Settings > Billing")
    c.save()
    c.store(scope(), "How do I change my email address?", "Profile > Email")
    # no close(): the index file on disk misses the second entry
    d = SemanticCache(tmp_path, embedder=embedder)
    found = d.lookup(scope(), "How do I change my e-mail address?")
    assert found.entry is not None and found.entry.answer == "Profile > Email"
    d.close()


def test_a_corrupt_index_file_is_rebuilt_from_sqlite(tmp_path: Path, embedder: Embedder) -> None:
    with SemanticCache(tmp_path, embedder=embedder) as c:
        c.store(scope(), "How do I cancel my subscription?", "Settings > Billing")
    for f in (tmp_path / "index").iterdir():
        f.write_bytes(b"garbage")
    with SemanticCache(tmp_path, embedder=embedder) as c:
        assert c.lookup(scope(), "How do I cancel my subscription?").hit


def test_concurrent_lookups_and_stores(cache: SemanticCache, embedder: Embedder) -> None:
    questions = [f"What is the status of order number {i}?" for i in range(12)]
    vectors = embedder.encode(questions)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            s = scope(f"tenant-{i % 3}")
            cache.store(s, questions[i], f"order {i} shipped", vector=vectors[i])
            found = cache.lookup(s, questions[i], vector=vectors[i])
            assert found.entry is not None and found.entry.answer == f"order {i} shipped"
        except BaseException as err:  # noqa: BLE001 - collected for the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 12


def test_isolation_holds_under_random_traffic(cache: SemanticCache, embedder: Embedder) -> None:
    rng = np.random.default_rng(0)
    prompts = ["What is our refund policy?", "How do I reset my password?", "Where is my order?"]
    vectors = embedder.encode(prompts)
    for _ in range(60):
        tenant, p = int(rng.integers(6)), int(rng.integers(3))
        s = scope(f"t{tenant}")
        if rng.random() < 0.5:
            cache.store(s, prompts[p], f"t{tenant}:{p}", vector=vectors[p])
        else:
            found = cache.lookup(s, prompts[p], vector=vectors[p])
            if found.entry is not None:
                assert found.entry.answer.startswith(f"t{tenant}:")
                assert found.entry.scope_key == replace(s, encoder=embedder_identity(embedder)).key


def test_bad_inputs_are_refused(cache: SemanticCache) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        cache.lookup(scope(), "   ")
    with pytest.raises(ValueError, match="384"):
        cache.lookup(scope(), "hello", vector=np.zeros(3))
    with pytest.raises(TypeError):
        cache.store(scope(), "hello", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [{"threshold": 0}, {"threshold": 1.5}, {"ttl_seconds": 0}, {"max_entries": 0},
     {"index_kind": "annoy"}, {"candidates": 0}, {"max_loaded_scopes": 0}, {"token_threshold": 0},
     {"token_threshold": 1.2}],
)  # fmt: skip
def test_bad_options_are_config_errors(
    tmp_path: Path, embedder: Embedder, options: dict[str, object]
) -> None:
    with pytest.raises(ConfigError):
        SemanticCache(tmp_path, embedder=embedder, **options)  # type: ignore[arg-type]


def test_unwritable_directory_is_a_config_error(tmp_path: Path, embedder: Embedder) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        SemanticCache(blocker / "cache", embedder=embedder)


def test_exact_index_gives_the_same_answers(tmp_path: Path, embedder: Embedder) -> None:
    with SemanticCache(tmp_path, embedder=embedder, index_kind="faiss-flat") as c:
        c.store(scope(), "How do I reset my password?", "Forgot password link")
        assert c.lookup(scope(), "How can I reset my password?").hit
    with SemanticCache(tmp_path, embedder=embedder, index_kind="faiss-flat") as c:
        assert c.lookup(scope(), "How can I reset my password?").hit


def test_store_many_loads_in_one_go(cache: SemanticCache, embedder: Embedder) -> None:
    prompts = ["How do I bake bread?", "What is the capital of Peru?", "How do I bake bread?"]
    stored = cache.store_many(scope(), prompts, ["flour", "Lima", "flour and water"])
    assert len(stored) == 3 and stored[0].id == stored[2].id
    assert len(cache) == 2
    found = cache.lookup(scope(), "Which city is the capital of Peru?")
    assert found.entry is not None and found.entry.answer == "Lima"
    with pytest.raises(ValueError, match="same length"):
        cache.store_many(scope(), ["a"], ["b", "c"])
    hot = CacheScope.for_request(api_key="k", model="m", sampling={"temperature": 1})
    assert cache.store_many(hot, ["a"], ["b"]) == []


def test_token_check_refuses_a_cached_prompt_that_says_less(tmp_path: Path, embedder: Embedder) -> None:
    full = "The documentation covers tutorials, how-to guides, audio, vision, text and tabular data."
    asked = "Tutorials, how-to guides, audio, vision, text and tabular data are covered in the documentation."
    with SemanticCache(tmp_path, embedder=embedder, threshold=0.5, token_threshold=0.81) as c:
        c.store(scope(), "The documentation explains things.", "short answer")
        missed = c.lookup(scope(), asked)
        assert missed.status == "miss" and missed.reason.startswith("token check")
        c.store(scope(), full, "full answer")
        found = c.lookup(scope(), asked)
        assert found.hit and found.entry is not None and found.entry.answer == "full answer"
    with SemanticCache(tmp_path / "off", embedder=embedder, threshold=0.5, token_threshold=None) as c:
        c.store(scope(), "The documentation explains things.", "short answer")
        assert c.lookup(scope(), asked).hit  # cosine and the lexical check alone let it through


class _NoTokens:
    """An embedder without token vectors (a sentence encoder only)."""

    name = "sentences-only"
    dim = 384

    def encode(self, texts: list[str]) -> np.ndarray:
        return get_embedder("minilm").encode(texts)


def test_token_check_is_on_by_default_and_sets_its_own_gate(tmp_path: Path, embedder: Embedder) -> None:
    with SemanticCache(tmp_path / "a", embedder=embedder) as c:
        assert c.token_threshold == DEFAULT_TOKEN_THRESHOLD and c.threshold == TOKEN_CHECK_GATE
    with SemanticCache(tmp_path / "b", embedder=embedder, token_threshold=None) as c:
        assert c.token_threshold is None and c.threshold == DEFAULT_THRESHOLD


def test_token_check_needs_token_vectors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_threshold=None"):
        SemanticCache(tmp_path, embedder=_NoTokens())
    with SemanticCache(tmp_path, embedder=_NoTokens(), token_threshold=None) as c:
        c.store(scope(), "How do I reset my password?", "Forgot password link")
        assert c.lookup(scope(), "How can I reset my password?").hit


def test_a_hit_with_the_prompts_vectors_given_runs_no_encoder(tmp_path: Path) -> None:
    counting = CountingEncoder()
    with SemanticCache(tmp_path, embedder=counting) as c:
        (vector,), (tokens,) = c.embed(["How do I reset my password?"])
        c.store(scope(), "How do I reset my password?", "Forgot password link", vector=vector, tokens=tokens)
        (asked_vector,), (asked_tokens,) = c.embed(["How can I reset my password?"])
        assert counting.texts == 2
        found = c.lookup(scope(), "How can I reset my password?", vector=asked_vector, tokens=asked_tokens)
        assert found.hit and counting.texts == 2  # the stored token vectors were read, not encoded


def test_an_entry_stored_without_token_vectors_is_encoded_once(tmp_path: Path) -> None:
    counting = CountingEncoder()
    with SemanticCache(tmp_path, embedder=counting) as c:
        (vector,), _ = c.embed(["How do I reset my password?"])
        c.store(scope(), "How do I reset my password?", "Forgot password link", vector=vector)
        (asked_vector,), (asked_tokens,) = c.embed(["How can I reset my password?"])
        before = counting.texts
        assert c.lookup(scope(), "How can I reset my password?", vector=asked_vector, tokens=asked_tokens).hit
        assert counting.texts == before + 1  # the cached prompt, once
        assert c.lookup(scope(), "How can I reset my password?", vector=asked_vector, tokens=asked_tokens).hit
        assert counting.texts == before + 1


def test_a_table_from_before_token_vectors_gains_the_column(tmp_path: Path, embedder: Embedder) -> None:
    import sqlite3

    with SemanticCache(tmp_path, embedder=embedder) as c:
        c.store(scope(), "How do I reset my password?", "Forgot password link")
    with sqlite3.connect(tmp_path / "cache.db") as db:
        db.execute("ALTER TABLE entries DROP COLUMN tokens")
    with SemanticCache(tmp_path, embedder=embedder) as c:
        found = c.lookup(scope(), "How can I reset my password?")
        assert found.hit and found.entry is not None
        assert c.entry_tokens([found.entry])[found.entry.id].shape[1] == embedder.dim
    with sqlite3.connect(tmp_path / "cache.db") as db:
        (stored,) = db.execute("SELECT tokens FROM entries").fetchone()
    assert stored is not None  # computed on the first near hit and kept


def test_token_vectors_are_stored_in_int8_within_a_hundredth() -> None:
    from govml.llm.cache.entries import pack_tokens, unpack_tokens

    tokens = get_embedder("minilm").encode_tokens(["How do I reset my password at work?"])[0]
    blob = pack_tokens(tokens)
    assert len(blob) == len(tokens) * (tokens.shape[1] + 4)
    back = unpack_tokens(blob, tokens.shape[1])
    assert back.shape == tokens.shape and np.abs(back - tokens).max() < 0.01
    cosines = np.sum(back * tokens, axis=1) / np.linalg.norm(back, axis=1)
    assert cosines.min() > 0.999
    with pytest.raises(ValueError, match="does not hold"):
        unpack_tokens(blob[:-1], tokens.shape[1])
    with pytest.raises(ValueError, match="non-empty"):
        pack_tokens(np.zeros((0, 384), dtype=np.float32))


def test_token_vectors_are_kept_only_while_the_token_check_is_on(tmp_path: Path, embedder: Embedder) -> None:
    import sqlite3

    (vector,), (tokens,) = embedder.encode_with_tokens(["How do I reset my password?"])  # type: ignore[attr-defined]
    for token_threshold in (None, DEFAULT_TOKEN_THRESHOLD):
        folder = tmp_path / str(token_threshold)
        with SemanticCache(folder, embedder=embedder, token_threshold=token_threshold) as c:
            c.store(scope(), "How do I reset my password?", "link", vector=vector, tokens=tokens)
        with sqlite3.connect(folder / "cache.db") as db:
            (stored,) = db.execute("SELECT tokens FROM entries").fetchone()
        assert (stored is None) == (token_threshold is None)
    with SemanticCache(tmp_path / "plain", embedder=_NoTokens(), token_threshold=None) as c:
        entry = c.store(scope(), "How do I reset my password?", "link")
        assert entry is not None
        with pytest.raises(ConfigError, match="no token vectors"):
            c.entry_tokens([entry])
