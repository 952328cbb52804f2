"""`diagnose`: run the sanity checks that apply to a model, its data and an attack.

The checks themselves live in `robustkit.evaluate.checks`, one module per family; each is also
a public function of the numbers a recipe already has, so nothing needs recomputing. This
module draws the seeded sample, runs the attacks the checks compare and orders the results.

The checks come from Carlini et al. 2019 (the evaluation checklist), Pintor et al. 2022
(indicators of attack failure), Athalye, Carlini & Wagner 2018 (obfuscated gradients),
Carlini & Wagner 2016 (distillation's vanishing gradients) and Wong, Rice & Kolter 2020
(catastrophic overfitting).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack, attack_batches
from ..attacks.reference import FGSM
from ..core.checks import check_images, check_labels, inspect_model, parse_eps
from ..core.distributed import on_first_rank, world
from ..core.errors import NoGradientError
from ..modelling.data import Data, seeded_sample
from ..registry import attack as make_attack
from .checks.attack import (
    _at_eps,
    _judge_unbounded,
    _opened,
    budget_units,
    gradient_based,
    gradient_free_companion,
    incomplete_optimisation,
    iterative_vs_single_step,
    loss_companion,
    loss_gap,
    monotone_in_eps,
)
from .checks.base import STATUSES, Check, Diagnosis, noise_tolerance
from .checks.contract import input_scale, label_order, model_learned, output_head
from .checks.defense import defense_cost
from .checks.masking import (
    adaptive_vs_oblivious,
    forward_optimisation,
    gradient_consistency,
    gradient_free,
    gradients_available,
    unstable_predictions,
)
from .checks.ood import ood_auroc, ood_saturated
from .predictions import _outputs, _predict, _rate

__all__ = ["CHECKS", "STATUSES", "Check", "Diagnosis", "diagnose", "noise_tolerance", "ood_auroc", "ood_saturated"]

CHECKS = (
    "model_learned",
    "output_head",
    "input_scale",
    "label_order",
    "gradients_available",
    "gradient_consistency",
    "unstable_predictions",
    "forward_optimisation",
    "defense_cost",
    "budget_units",
    "unbounded_attack",
    "monotone_in_eps",
    "iterative_vs_single_step",
    "incomplete_optimisation",
    "loss_gap",
    "gradient_free",
    "adaptive_vs_oblivious",
)
"""The checks `diagnose` can run, in the order it runs them."""

GRADIENT_FREE_SAMPLE = 32  # survivors of the attack that the gradient-free check attacks with Square
GRADIENT_FREE_QUERIES = 300  # Square's queries per image there (100 missed a k-WTA model's discontinuities)

ATTACK_CHECKS = CHECKS[CHECKS.index("budget_units") :]
"""The checks that need an attack."""


def diagnose(
    model: nn.Module,
    data: Data,
    attack: Attack | str | None = None,
    eps: float | str | None = None,
    defense_of: nn.Module | None = None,
    sample: int | None = 256,
    seed: int = 0,
    skip: Sequence[str] = (),
    batch_size: int = 256,
) -> Diagnosis:
    """Run the sanity checks that apply to ``model`` on a seeded sample of ``data``.

    ``data``: an ImageSet, a DataLoader/Dataset or an ``(x, y)`` pair; ``sample`` points are
    drawn from it with ``seed`` (all of them for ``None`` or a smaller set). ``attack``: an
    Attack or a registry name; ``eps`` overrides its budget. ``defense_of``: the undefended
    model when ``model`` is a defended one. ``skip``: names of checks not to run.

    Always (the model's contract and its gradients): `model_learned`, `output_head` and `label_order`
    (1 forward pass), `input_scale` (3 forward), `gradients_available` (1 forward + 1 backward),
    `gradient_consistency` (2 forward + 1 backward), `unstable_predictions` (2 forward),
    `forward_optimisation` (1 forward of 8 images); with
    ``defense_of``: `defense_cost` (1 forward). With an attack (A = one run of it on the sample,
    the unit of ``cost["ratio"]``):

    - `budget_units`: the budget is in the attack's norm (no cost);
    - the attack at eps itself (1 A: robust accuracy, and the time ``cost["ratio"]`` divides by);
    - `unbounded_attack`: the attack with its budget opened (1 A); an attack with a gradient-free
      part (AutoAttack's Square) is replaced by the reference PGD of its norm, so that a gradient
      attack, not random search, has to reach ~0%;
    - `monotone_in_eps` over eps · (0, ½, 1, 2) and the opened budget (2 A more: ½ and 2);
    - `iterative_vs_single_step` for L∞ attacks other than FGSM (1 forward + 1 backward);
    - `incomplete_optimisation` for attacks with ``steps``: 2×steps on the survivors (≤ 2 A);
    - `loss_gap` for iterative cross-entropy attacks: the same attack on the DLR loss (1 A);
    - `gradient_free`: a 300-query Square attack on at most 32 of the images the attack left
      standing (about 600 forward passes of 32 images; none when nothing survives);
    - `adaptive_vs_oblivious` with ``defense_of``: the attack crafted on it (1 A).

    Measured on digits (PGD-10 at 8/255, 256 points, 2 loaded CPU cores): see
    benchmarks/bench.py ``bench_diagnose``. ``Diagnosis.cost`` reports each call's seconds, the
    seconds of one attack run, their ratio, and ``attack_runs``: the attack runs it made,
    counted in runs over the whole sample.

    Under torch.distributed (``torchrun``: an initialised group of W > 1 processes) the checks
    are not sharded: rank 0 runs them on the whole sample while the other ranks wait, and every
    rank returns rank 0's diagnosis, whose ``measured["computed_on"]`` says so.
    """
    rank_count = world()[1]
    if rank_count == 1:
        return _diagnose(model, data, attack, eps, defense_of, sample, seed, skip, batch_size)
    diagnosis = on_first_rank(lambda: _diagnose(model, data, attack, eps, defense_of, sample, seed, skip, batch_size))
    diagnosis.measured["computed_on"] = f"rank 0 of {rank_count} (torch.distributed), sent to the others"
    return diagnosis


def _diagnose(
    model: nn.Module,
    data: Data,
    attack: Attack | str | None,
    eps: float | str | None,
    defense_of: nn.Module | None,
    sample: int | None,
    seed: int,
    skip: Sequence[str],
    batch_size: int,
) -> Diagnosis:
    """`diagnose` in this process."""
    start = time.perf_counter()
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError(f"skip: unknown checks {', '.join(unknown)}; valid names: {', '.join(CHECKS)}")
    x, y = seeded_sample(data, sample, seed)
    check_images(x)
    num_classes = inspect_model(model, x)
    check_labels(y, len(x), num_classes)
    n = len(x)
    checks: list[Check] = []
    skipped: dict[str, str] = {name: "skipped by the caller (skip=)" for name in skip}

    def wanted(name: str, why_not: str | None = None) -> bool:
        if name in skipped:
            return False
        if why_not:
            skipped[name] = why_not
            return False
        return True

    def acc_of(adv: torch.Tensor, on: nn.Module = model) -> float:
        return _rate(_predict(on, adv, batch_size) == y.cpu())

    outputs = _outputs(model, x, batch_size)
    clean = _rate(outputs.argmax(1) == y.cpu())
    measured: dict[str, Any] = {"clean_accuracy": clean, "num_classes": num_classes}
    if wanted("model_learned"):
        checks.append(model_learned(clean, num_classes, n))
    if wanted("output_head"):
        checks.append(output_head(outputs))
    if wanted("input_scale"):
        checks.append(input_scale(model, x, y, clean_accuracy=clean, batch_size=batch_size))
    if wanted("label_order"):
        checks.append(label_order(outputs.argmax(1), y, num_classes, seed=seed))
    if wanted("gradients_available"):
        checks.append(gradients_available(model, x, y, batch_size))
    surrogate = [type(m).__name__ for m in model.modules() if getattr(m, "surrogate_gradient", False)]
    why = (
        f"the gradient is a deliberate surrogate (BPDA) in {surrogate[0]}; the attack checks judge it"
        if surrogate
        else None
    )
    if wanted("gradient_consistency", why):
        checks.append(gradient_consistency(model, x, y, seed=seed, batch_size=batch_size))
    if wanted("unstable_predictions"):
        checks.append(unstable_predictions(model, x, batch_size=batch_size))
    if wanted("forward_optimisation"):
        checks.append(forward_optimisation(model, x))
    if wanted("defense_cost", None if defense_of is not None else "needs defense_of= (the undefended model)"):
        undefended = acc_of(x, defense_of)
        measured["undefended_clean_accuracy"] = undefended
        checks.append(defense_cost(undefended, clean))

    attack_seconds, runs = None, 0.0  # runs: attack runs on the whole sample, survivors counted pro rata
    adv, why_no_attack = None, "needs attack="
    if attack is not None:
        attack = make_attack(attack) if isinstance(attack, str) else attack
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an Attack or an attack name, got {type(attack).__name__}")
        if eps is not None:
            attack = _at_eps(attack, parse_eps(eps, limit=math.inf))

        def run(a: Attack, xs: torch.Tensor = x, ys: torch.Tensor = y) -> torch.Tensor:
            return attack_batches(a, model, xs, ys, batch_size=batch_size)

        t0 = time.perf_counter()
        try:
            adv = run(attack)
        except NoGradientError as err:  # gradients_available and gradient_consistency above say why
            measured["attack_error"] = str(err)
            why_no_attack = f"{attack.label()} cannot run: no gradient reaches the input (gradients_available)"
        attack_seconds = time.perf_counter() - t0
        runs += 1
    if attack is None or adv is None:
        for name in ATTACK_CHECKS:
            wanted(name, why_no_attack)
    else:
        survived = _predict(model, adv, batch_size) == y.cpu()
        robust = _rate(survived)
        measured.update(attack=attack.describe(), robust_accuracy=robust)
        if wanted("budget_units", None if attack.bounded and attack.eps else f"{attack.label()} has no budget"):
            checks.append(budget_units(attack.eps, attack.norm, tuple(x.shape[1:])))
        gradient_attack = gradient_based(attack)
        opened, budget = _opened(gradient_attack, x)
        bounded_eps = attack.eps if attack.bounded else None
        unbounded_acc = 0.0
        if "unbounded_attack" not in skipped or ("monotone_in_eps" not in skipped and bounded_eps and budget):
            unbounded_acc = acc_of(run(opened))
            runs += 1
            measured["unbounded_accuracy"] = unbounded_acc
        if wanted("unbounded_attack"):
            checks.append(_judge_unbounded(unbounded_acc, n, budget, gradient_attack))
        why = None if bounded_eps else f"{attack.label()} has no budget to vary (unbounded or eps 0)"
        if wanted("monotone_in_eps", why):
            grid = [(0.0, clean), (bounded_eps, robust)]
            for factor in (0.5, 2.0):
                e = bounded_eps * factor
                if budget is None or e < budget:
                    grid.append((e, acc_of(run(_at_eps(attack, e)))))
                    runs += 1
            if budget is not None and gradient_attack is attack:
                grid.append((budget, unbounded_acc))
            grid.sort()
            measured["eps_curve"] = {"eps": [g[0] for g in grid], "accuracy": [g[1] for g in grid]}
            checks.append(monotone_in_eps([g[0] for g in grid], [g[1] for g in grid], n))
        why = None
        if attack.norm != "linf" or not bounded_eps:
            why = f"needs a bounded L∞ attack; {attack.label()} is {attack.norm}{'' if bounded_eps else ', unbounded'}"
        elif attack.name == "fgsm":
            why = "the attack is single-step FGSM itself"
        if wanted("iterative_vs_single_step", why):
            fgsm = acc_of(run(FGSM(eps=bounded_eps)))
            measured["fgsm_accuracy"] = fgsm
            checks.append(iterative_vs_single_step(robust, fgsm, n))
        why = None if "steps" in attack.params else f"{attack.label()} has no steps parameter"
        if wanted("incomplete_optimisation", why):
            checks.append(incomplete_optimisation(attack, model, x, y, x_adv=adv, batch_size=batch_size))
            runs += 2 * robust  # twice the steps, on the points that survived
        companion, why = loss_companion(attack, num_classes)
        if wanted("loss_gap", why):
            other = acc_of(run(companion))
            runs += 1
            measured[f"{companion.params['loss']}_accuracy"] = other
            checks.append(loss_gap(robust, other, n, companion.params["loss"]))
        square, why = gradient_free_companion(attack, GRADIENT_FREE_QUERIES, seed)
        if wanted("gradient_free", why):
            idx = survived.nonzero().flatten()
            tried = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:GRADIENT_FREE_SAMPLE]]
            still = 0
            if len(tried):
                still = int((_predict(model, run(square, x[tried], y[tried]), batch_size) == y[tried].cpu()).sum())
            measured["gradient_free_broken"] = len(tried) - still
            checks.append(gradient_free(len(tried) - still, len(tried), len(idx), n, square.label()))
        if wanted(
            "adaptive_vs_oblivious", None if defense_of is not None else "needs defense_of= (the undefended model)"
        ):
            oblivious = acc_of(attack_batches(attack, defense_of, x, y, batch_size=batch_size))
            runs += 1
            measured["oblivious_accuracy"] = oblivious
            checks.append(adaptive_vs_oblivious(robust, oblivious, n))
    seconds = time.perf_counter() - start
    cost = {"seconds": seconds}
    if attack_seconds is not None:
        cost.update(attack_seconds=attack_seconds, ratio=seconds / max(attack_seconds, 1e-9), attack_runs=runs)
    order = {name: i for i, name in enumerate(CHECKS)}
    skipped = dict(sorted(skipped.items(), key=lambda kv: order[kv[0]]))
    return Diagnosis(checks, skipped, n, measured, cost)
