"""What one request went through, rendered as the ``govml`` object, headers and a log row."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from govml.llm.backends.base import Usage
from govml.llm.monitoring import CarbonModel, CpuClock
from govml.llm.request_log import RequestRecord


@dataclass(frozen=True)
class SafetyView:
    """A safety check as reported: score, categories and what the policy did."""

    safety_score: float | None
    categories: list[str]
    action: str  # allow | flag | redact | block | skipped

    def json(self) -> dict[str, Any]:
        score = None if self.safety_score is None else round(self.safety_score, 4)
        return {"safety_score": score, "categories": self.categories, "action": self.action}


SKIPPED = SafetyView(None, [], "skipped")


@dataclass
class RequestTrace:
    """Accumulates a request's figures as the pipeline runs."""

    tenant: str
    model: str
    stream: bool = False
    request_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)
    input: SafetyView = SKIPPED
    output: SafetyView = SKIPPED
    cache_status: str = "bypass"
    cache_similarity: float | None = None
    backend: str | None = None
    overhead_seconds: float = 0.0
    overhead_cpu_seconds: float = 0.0
    steps_seconds: dict[str, float] = field(default_factory=dict)
    generation_seconds: float = 0.0
    first_token_seconds: float | None = None
    usage: Usage | None = None
    cpu: CpuClock = field(default_factory=CpuClock)
    prompt: str | None = None
    answer: str | None = None

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def add_step(self, name: str, seconds: float, cpu_seconds: float) -> None:
        """Count a gateway step (guard, cache, filter) into the overhead."""
        self.overhead_seconds += seconds
        self.overhead_cpu_seconds += cpu_seconds
        self.steps_seconds[name] = self.steps_seconds.get(name, 0.0) + seconds

    def mark_first_token(self) -> None:
        if self.first_token_seconds is None:
            self.first_token_seconds = time.perf_counter() - self.started

    def tokens_per_second(self) -> float | None:
        if self.usage is None or self.generation_seconds <= 0 or self.cache_status == "hit":
            return None
        return self.usage.completion_tokens / self.generation_seconds

    def govml(self, carbon: CarbonModel) -> dict[str, Any]:
        rate = self.tokens_per_second()
        return {
            "request_id": self.request_id,
            "input": self.input.json(),
            "output": self.output.json(),
            "cache": {
                "status": self.cache_status,
                "similarity": None
                if self.cache_similarity is None
                else round(self.cache_similarity, 4),
            },
            "backend": self.backend,
            "latency_ms": round(self.latency_ms(), 2),
            "overhead_ms": round(self.overhead_seconds * 1000, 2),
            "overhead_cpu_ms": round(self.overhead_cpu_seconds * 1000, 2),
            "steps_ms": {k: round(v * 1000, 2) for k, v in self.steps_seconds.items()},
            "time_to_first_token_ms": None
            if self.first_token_seconds is None
            else round(self.first_token_seconds * 1000, 2),
            "tokens_per_second": None if rate is None else round(rate, 2),
            "carbon_g": round(carbon.grams(self.cpu.seconds), 8),
        }

    def headers(self, carbon: CarbonModel) -> dict[str, str]:
        """``x-govml-*`` headers (for a stream: what is known when it starts)."""
        g = self.govml(carbon)

        def text(value: object) -> str:
            return "" if value is None else str(value)

        return {
            "x-govml-request-id": self.request_id,
            "x-govml-input-safety": text(g["input"]["safety_score"]),
            "x-govml-input-categories": ",".join(self.input.categories),
            "x-govml-input-action": self.input.action,
            "x-govml-output-safety": text(g["output"]["safety_score"]),
            "x-govml-output-categories": ",".join(self.output.categories),
            "x-govml-output-action": self.output.action,
            "x-govml-cache": self.cache_status,
            "x-govml-cache-similarity": text(g["cache"]["similarity"]),
            "x-govml-backend": text(self.backend),
            "x-govml-latency-ms": text(g["latency_ms"]),
            "x-govml-carbon-g": text(g["carbon_g"]),
        }

    def record(self, *, status_code: int, outcome: str, carbon: CarbonModel) -> RequestRecord:
        return RequestRecord(
            request_id=self.request_id,
            created=float(self.created),
            tenant=self.tenant,
            model=self.model,
            status_code=status_code,
            outcome=outcome,
            stream=self.stream,
            backend=self.backend,
            cache_status=self.cache_status,
            cache_similarity=self.cache_similarity,
            input_safety=self.input.safety_score,
            output_safety=self.output.safety_score,
            categories=sorted(set(self.input.categories) | set(self.output.categories)),
            prompt=self.prompt,
            answer=self.answer,
            prompt_tokens=None if self.usage is None else self.usage.prompt_tokens,
            completion_tokens=None if self.usage is None else self.usage.completion_tokens,
            latency_ms=self.latency_ms(),
            time_to_first_token_ms=None
            if self.first_token_seconds is None
            else self.first_token_seconds * 1000,
            carbon_g=carbon.grams(self.cpu.seconds),
        )
