"""The LLM gateway's safety layer: prompt guard, output filter, policies, training.

Heavy dependencies (sentence-transformers, Presidio, scikit-learn) load on first use.
"""

from govml.llm.safety.evaluation import GuardEvaluation, evaluate_guard
from govml.llm.safety.guard import OutputFilter, PromptGuard, StreamingOutputFilter
from govml.llm.safety.policy import Decision, Policy, apply_policy
from govml.llm.safety.result import GuardResult
from govml.llm.safety.training import GuardTrainingReport, train_guard

__all__ = [
    "Decision",
    "GuardEvaluation",
    "GuardResult",
    "GuardTrainingReport",
    "OutputFilter",
    "Policy",
    "PromptGuard",
    "StreamingOutputFilter",
    "apply_policy",
    "evaluate_guard",
    "train_guard",
]
