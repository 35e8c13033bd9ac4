"""The scope of a cached answer: who asked, which model, which system prompt, which sampling.

Two requests can share a cached answer only when their scopes are equal. Each scope has
its own vector index, so a lookup never even sees another tenant's entries.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

__all__ = ["OPENAI_DEFAULT_TEMPERATURE", "CacheScope", "sha256_hex"]

#: what an OpenAI-compatible backend samples with when the request names no temperature
OPENAI_DEFAULT_TEMPERATURE = 1.0


def sha256_hex(text: str) -> str:
    """Hex sha256 of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheScope:
    """Everything besides the user prompt that decides an answer.

    ``tenant`` is a hash of the API key (never the key), ``system_prompt_hash`` a hash
    of the system prompt, ``sampling`` the canonical JSON of the sampling parameters
    (temperature, top_p, max_tokens, stop, seed, ...). Build it with :meth:`for_request`.
    """

    tenant: str
    model: str
    system_prompt_hash: str
    sampling: str
    #: what made the vectors (``embedder_identity``); the cache fills it in, so entries
    #: of two encoders sharing one database live in different scopes, never one index
    encoder: str = ""

    def __post_init__(self) -> None:
        for field in ("tenant", "model"):
            if not getattr(self, field):
                raise ValueError(f"CacheScope.{field} must not be empty")
        parsed = json.loads(self.sampling)
        if not isinstance(parsed, dict):
            raise ValueError("CacheScope.sampling must be the JSON of an object")

    @classmethod
    def for_request(
        cls,
        *,
        api_key: str,
        model: str,
        system_prompt: str | None = None,
        sampling: Mapping[str, object] | None = None,
    ) -> CacheScope:
        """The scope of one chat request; hashes the key and the system prompt.

        ``sampling`` values must be JSON-serialisable; ``None`` values are dropped, so
        an omitted parameter and an explicit ``null`` share a scope.
        """
        if not api_key:
            raise ValueError("api_key must not be empty: the cache is scoped per tenant")
        params = {k: v for k, v in (sampling or {}).items() if v is not None}
        temperature = params.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or temperature < 0
        ):
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        try:
            canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"sampling parameters must be JSON values: {err}") from err
        return cls(
            tenant=sha256_hex("govml-tenant:" + api_key),
            model=model,
            system_prompt_hash=sha256_hex(system_prompt or ""),
            sampling=canonical,
        )

    @property
    def temperature(self) -> float:
        """The sampling temperature; OpenAI's default (1.0) when the request names none."""
        value = json.loads(self.sampling).get("temperature", OPENAI_DEFAULT_TEMPERATURE)
        return float(value)

    @cached_property
    def key(self) -> str:
        """A stable id of the scope (hex sha256 over all its parts)."""
        parts = [self.tenant, self.model, self.system_prompt_hash, self.sampling, self.encoder]
        return sha256_hex(json.dumps(parts, separators=(",", ":")))
