"""Evaluation layer: robustness (accuracy, sweeps, budgets, agreement) and OOD metrics.

``robustkit.evaluate.<name>`` is the public entry point for every function here.
"""

from ..attacks.base import attack_batches
from .ood import OODResult, ood, ood_metrics
from .robustness import (
    Budget,
    Sweep,
    accuracy,
    agreement,
    eps_sweep,
    minimal_budget,
    predict,
    random_targets,
    robust_accuracy,
)

__all__ = [
    "Budget",
    "OODResult",
    "Sweep",
    "accuracy",
    "agreement",
    "attack_batches",
    "eps_sweep",
    "minimal_budget",
    "ood",
    "ood_metrics",
    "predict",
    "random_targets",
    "robust_accuracy",
]
