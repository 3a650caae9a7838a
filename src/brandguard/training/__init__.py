"""Fine-tuning (``brandguard train``): metric learning on reference photos with counterfeit-style edits.

Core layers never import this package. See :mod:`brandguard.training.trainer` for the whole run.
"""

from brandguard.training.config import TrainConfig
from brandguard.training.trainer import GuardError, PipelineEvaluator, TrainResult, train

__all__ = ["GuardError", "PipelineEvaluator", "TrainConfig", "TrainResult", "train"]
