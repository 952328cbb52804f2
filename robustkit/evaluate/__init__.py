"""Evaluation layer: robustness (accuracy, sweeps, budgets, agreement), OOD metrics, sanity checks,
and `benchmark` (clean, robust and OOD numbers in one call, as RobustBench and OpenOOD report them).

``robustkit.evaluate.<name>`` is the public entry point for every function here.
"""

from ..attacks.base import attack_batches
from .benchmark import Benchmark, benchmark, ood_sets, threat_model
from .certify import Certification, Empirical, certified_accuracy, empirical_accuracy
from .checks import (
    Check,
    Diagnosis,
    adaptive_vs_oblivious,
    catastrophic_overfitting,
    contract_checks,
    defense_cost,
    gradient_consistency,
    gradient_free,
    gradients_available,
    incomplete_optimisation,
    input_scale,
    iterative_vs_single_step,
    label_order,
    loss_gap,
    model_learned,
    monotone_in_eps,
    ood_auroc,
    ood_saturated,
    output_head,
    smoothing_learned,
    unbounded_attack,
    unstable_predictions,
)
from .checks.certify import certified_vs_empirical
from .corruptions import CorruptionResult, corruption_accuracy
from .diagnose import diagnose
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
    "Benchmark",
    "Budget",
    "Certification",
    "Check",
    "CorruptionResult",
    "Diagnosis",
    "Empirical",
    "OODResult",
    "Sweep",
    "accuracy",
    "adaptive_vs_oblivious",
    "agreement",
    "attack_batches",
    "benchmark",
    "catastrophic_overfitting",
    "certified_accuracy",
    "certified_vs_empirical",
    "contract_checks",
    "corruption_accuracy",
    "defense_cost",
    "diagnose",
    "empirical_accuracy",
    "eps_sweep",
    "gradient_consistency",
    "gradient_free",
    "gradients_available",
    "incomplete_optimisation",
    "input_scale",
    "iterative_vs_single_step",
    "label_order",
    "loss_gap",
    "minimal_budget",
    "model_learned",
    "monotone_in_eps",
    "ood",
    "ood_auroc",
    "ood_metrics",
    "ood_saturated",
    "ood_sets",
    "output_head",
    "predict",
    "random_targets",
    "robust_accuracy",
    "smoothing_learned",
    "threat_model",
    "unbounded_attack",
    "unstable_predictions",
]
