"""Sanity checks, one module per family; `robustkit.evaluate.diagnose` runs them on a model.

- `contract`: the model works, returns logits, takes the input it is given and is judged against
  labels in its own class order (model_learned, output_head, input_scale, label_order; together
  `contract_checks`, which every entry point runs);
- `masking`: the gradients an attack follows exist, are stable and lead somewhere (gradients_available,
  gradient_consistency, unstable_predictions, forward_optimisation, gradient_free, adaptive_vs_oblivious);
- `attack`: the budget is in the attack's norm (budget_units) and the attack did its job (opened
  budget, eps curve, single step, steps, loss_gap);
- `defense`: what a defense costs, catastrophic overfitting;
- `ood`: OOD scores rank better than a coin and are not decided by ties, the sets share one input
  scale (input_range) and the ID images are not the detector's fit data (fit_overlap);
- `official`: the official AutoAttack's own flag checks (autoattack_flags);
- `certify`: a smoothed classifier that learned (smoothing_learned), a certified curve never above
  the empirical one (certified_vs_empirical).

A check returns a `Check`: ``status`` "pass", "warn" (suspicious: look before you publish)
or "fail" (the number is wrong as it stands), a one-sentence ``detail`` saying what it means
and what to do, the ``values`` behind it and the ``paper`` it comes from.
"""

from .attack import (
    budget_units,
    incomplete_optimisation,
    iterative_vs_single_step,
    loss_gap,
    monotone_in_eps,
    unbounded_attack,
)
from .base import STATUSES, Z_FAIL, Z_WARN, Check, Diagnosis, noise_tolerance, warn_problems
from .certify import certified_vs_empirical, smoothing_learned
from .contract import CONTRACT, contract_checks, input_scale, label_order, model_learned, output_head
from .defense import catastrophic_overfitting, defense_cost
from .masking import (
    adaptive_vs_oblivious,
    forward_optimisation,
    gradient_consistency,
    gradient_free,
    gradients_available,
    unstable_predictions,
)
from .official import autoattack_flags
from .ood import fit_overlap, input_range, ood_auroc, ood_saturated

__all__ = [
    "CONTRACT",
    "STATUSES",
    "Z_FAIL",
    "Z_WARN",
    "Check",
    "Diagnosis",
    "adaptive_vs_oblivious",
    "autoattack_flags",
    "budget_units",
    "catastrophic_overfitting",
    "certified_vs_empirical",
    "contract_checks",
    "defense_cost",
    "fit_overlap",
    "forward_optimisation",
    "gradient_consistency",
    "gradient_free",
    "gradients_available",
    "incomplete_optimisation",
    "input_range",
    "input_scale",
    "iterative_vs_single_step",
    "label_order",
    "loss_gap",
    "model_learned",
    "monotone_in_eps",
    "noise_tolerance",
    "ood_auroc",
    "ood_saturated",
    "output_head",
    "smoothing_learned",
    "unbounded_attack",
    "unstable_predictions",
    "warn_problems",
]
