"""Cache scopes: what separates answers, and what is refused."""

from __future__ import annotations

import pytest

from govml.llm.cache.scope import CacheScope


def test_key_is_hashed_and_never_stored() -> None:
    scope = CacheScope.for_request(api_key="sk-secret-1", model="m")
    assert "sk-secret-1" not in repr(scope)
    assert len(scope.tenant) == 64


def test_every_part_changes_the_scope() -> None:
    base = dict(api_key="k1", model="m", system_prompt="be brief", sampling={"temperature": 0})
    key = CacheScope.for_request(**base).key  # type: ignore[arg-type]
    for change in (
        {"api_key": "k2"},
        {"model": "m2"},
        {"system_prompt": "be verbose"},
        {"sampling": {"temperature": 0, "max_tokens": 10}},
    ):
        assert CacheScope.for_request(**{**base, **change}).key != key  # type: ignore[arg-type]


def test_sampling_order_and_nones_do_not_matter() -> None:
    a = CacheScope.for_request(api_key="k", model="m", sampling={"top_p": 1, "temperature": 0})
    b = CacheScope.for_request(
        api_key="k", model="m", sampling={"temperature": 0, "seed": None, "top_p": 1}
    )
    assert a == b and a.key == b.key


def test_temperature_defaults_to_openai_default() -> None:
    assert CacheScope.for_request(api_key="k", model="m").temperature == 1.0
    scope = CacheScope.for_request(api_key="k", model="m", sampling={"temperature": 0})
    assert scope.temperature == 0.0


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": -0.1}, {"temperature": "hot"}, {"temperature": float("nan")}, {"x": {1, 2}}],
)
def test_bad_sampling_is_refused(sampling: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CacheScope.for_request(api_key="k", model="m", sampling=sampling)


def test_empty_key_or_model_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key"):
        CacheScope.for_request(api_key="", model="m")
    with pytest.raises(ValueError, match="model"):
        CacheScope.for_request(api_key="k", model="")
