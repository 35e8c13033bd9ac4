"""Hyperparameter trials as Ray tasks: the arrays go to the object store once per search."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from govml.compute.ray_session import engine_executor
from govml.config import ComputeConfig
from govml.training.search import BatchScorer, TrialExecutor, TrialProblem, fit_and_score


def _fit_and_score_task(problem: TrialProblem, params: dict[str, Any]) -> float:
    # Ray resolves the ObjectRef argument to the problem; numpy arrays arrive zero-copy.
    return fit_and_score(problem, params)


@dataclass
class RayTrialExecutor:
    """Fits each batch of trials as parallel Ray tasks on the connected cluster."""

    parallelism: int

    def bind(self, problem: TrialProblem) -> BatchScorer:
        import ray

        problem_ref = ray.put(problem)
        task = ray.remote(num_cpus=1, max_retries=0)(_fit_and_score_task)

        def score_batch(batch: list[dict[str, Any]]) -> list[float]:
            return [float(v) for v in ray.get([task.remote(problem_ref, params) for params in batch])]

        return score_batch


def trial_executor(config: ComputeConfig) -> AbstractContextManager[TrialExecutor | None]:
    """The executor of the search's trials: None (in process) for ``local``, Ray tasks for ``ray``."""
    return engine_executor(config, lambda cpus: RayTrialExecutor(parallelism=cpus))
