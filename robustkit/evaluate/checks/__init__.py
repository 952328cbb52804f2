"""Sanity checks, one module per family; `robustkit.evaluate.diagnose` runs them on a model.

- `contract`: the model works and takes the input it is given (model_learned, ...);
- `masking`: the gradients an attack follows exist, are stable and lead somewhere;
- `attack`: the attack did its job (opened budget, eps curve, steps, single step);
- `defense`: what a defense costs, catastrophic overfitting;
- `ood`: OOD scores rank better than a coin and are not decided by ties.

A check returns a `Check`: ``status`` "pass", "warn" (suspicious: look before you publish)
or "fail" (the number is wrong as it stands), a one-sentence ``detail`` saying what it means
and what to do, the ``values`` behind it and the ``paper`` it comes from.
"""

from .attack import incomplete_optimisation, iterative_vs_single_step, monotone_in_eps, unbounded_attack
from .base import STATUSES, Z_FAIL, Z_WARN, Check, Diagnosis, noise_tolerance
from .contract import model_learned
from .defense import catastrophic_overfitting, defense_cost
from .masking import adaptive_vs_oblivious, gradients_available, unstable_predictions
from .ood import ood_auroc, ood_saturated

__all__ = [
    "STATUSES",
    "Z_FAIL",
    "Z_WARN",
    "Check",
    "Diagnosis",
    "adaptive_vs_oblivious",
    "catastrophic_overfitting",
    "defense_cost",
    "gradients_available",
    "incomplete_optimisation",
    "iterative_vs_single_step",
    "model_learned",
    "monotone_in_eps",
    "noise_tolerance",
    "ood_auroc",
    "ood_saturated",
    "unbounded_attack",
    "unstable_predictions",
]
