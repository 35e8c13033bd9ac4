"""Scale-out: hyperparameter trials on Ray, batch scoring of large files (docs/scale.md).

Nothing here imports Ray until the ``ray`` engine is asked for: ``local`` needs no Ray.
"""

from govml.compute.ray_session import ComputeError, ray_connection
from govml.compute.scoring import ScoringResult, score_file
from govml.compute.trials import RayTrialExecutor, trial_executor

__all__ = ["ComputeError", "RayTrialExecutor", "ScoringResult", "ray_connection", "score_file", "trial_executor"]
