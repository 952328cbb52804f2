"""Attack-failure checks: the attack behind a robust accuracy did its job.

Pintor et al. 2022's indicators of attack failure and Carlini et al. 2019's checklist: a budget
opened to everything must reach ~0% accuracy, accuracy must fall with eps, an iterative attack must
beat one step, and doubling the steps must not move the number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...attacks.base import NORMS, Attack, attack_batches
from ...core.checks import check_images, check_labels, inspect_model, parse_eps
from ...core.papers import CARLINI_2019, CARLINI_WAGNER_2017, CROCE_2020, CROCE_2021, PINTOR_2022
from ...registry import attack as make_attack
from ..predictions import _predict, _rate
from .base import Z_FAIL, Check, _check_n, _fmt_eps, _not_above, _share, noise_tolerance

UNBOUNDED_WARN, UNBOUNDED_FAIL = 0.02, 0.10  # accuracy left by the attack with its budget opened
STEPS_WARN, STEPS_FAIL = 0.03, 0.05  # robust-accuracy drop when the steps double (and more than 3 / 5 images)


def monotone_in_eps(eps_list: Sequence[float | str], accuracies: Sequence[float], n: int) -> Check:
    """Accuracy must not rise with eps beyond sampling noise (Carlini et al. 2019, §5.2).

    A larger budget contains every perturbation of a smaller one, so a correct attack can only
    lower accuracy. Each accuracy is compared with the lowest one at any smaller eps; a rise
    beyond `noise_tolerance` (z = 2) warns, beyond z = 4 fails. ``n``: points per accuracy.

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    eps = [parse_eps(e, limit=math.inf) for e in eps_list]
    accs = [_share("accuracy", a) for a in accuracies]
    if len(eps) != len(accs) or len(eps) < 2:
        raise ValueError(f"monotone_in_eps needs ≥ 2 eps values and one accuracy each; got {len(eps)} and {len(accs)}")
    _check_n(n)
    order = sorted(range(len(eps)), key=lambda i: eps[i])
    eps, accs = [eps[i] for i in order], [accs[i] for i in order]
    rises = []  # (excess over the tolerance, i_low, j_high, rise, tolerance, beyond the fail tolerance)
    low = 0  # the index of the lowest accuracy so far
    for j in range(1, len(eps)):
        if eps[j] > eps[low] and accs[j] > accs[low]:
            rise = accs[j] - accs[low]
            tol = noise_tolerance(accs[low], accs[j], n)
            if rise > tol:
                rises.append((rise - tol, low, j, rise, tol, rise > noise_tolerance(accs[low], accs[j], n, Z_FAIL)))
        if accs[j] < accs[low]:
            low = j
    values = {"eps": eps, "accuracy": accs, "n": n}
    if not rises:
        detail = (
            f"accuracy does not rise with eps beyond sampling noise over eps {_fmt_eps(eps[0])}..{_fmt_eps(eps[-1])}"
        )
        return Check("monotone_in_eps", "pass", detail, values, CARLINI_2019)
    _, i, j, rise, tol, _ = max(rises)
    status = "fail" if any(r[-1] for r in rises) else "warn"
    values.update(rise=rise, tolerance=tol, from_eps=eps[i], to_eps=eps[j])
    detail = (
        f"accuracy rises from {accs[i]:.1%} at eps={_fmt_eps(eps[i])} to {accs[j]:.1%} at eps={_fmt_eps(eps[j])}, "
        f"beyond sampling noise (±{tol:.1%}): a larger budget cannot make a model more robust, so the attack fails "
        "at some budgets (step size, too few steps, masked gradients); tune it until the curve falls"
    )
    return Check("monotone_in_eps", status, detail, values, CARLINI_2019)


def iterative_vs_single_step(pgd_accuracy: float, fgsm_accuracy: float, n: int) -> Check:
    """An iterative attack (PGD) must not leave more accuracy than single-step FGSM at the same eps.

    PGD's first step can be FGSM's, so leaving more accuracy beyond `noise_tolerance` (z = 2:
    warn, z = 4: fail) means the iterative attack is failing (Carlini et al. 2019, §5.2:
    "iterative attacks should be stronger than single-step attacks").

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    return _not_above(
        "iterative_vs_single_step", pgd_accuracy, fgsm_accuracy, n, ("pgd_accuracy", "fgsm_accuracy"),
        "the iterative attack leaves {worse:.1%} accuracy but single-step FGSM only {better:.1%} at the same eps "
        "(noise ±{tol:.1%}): an iterative attack weaker than one step is failing (step size, masked gradients); "
        "fix it and report the lower number",
        "the iterative attack ({worse:.1%}) is at least as strong as single-step FGSM ({better:.1%})",
        CARLINI_2019,
    )  # fmt: skip


def unbounded_attack(
    attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> Check:
    """The same attack with its budget opened must bring accuracy to ~0.

    L∞ attacks run at eps = 1 (any image reachable), L2 attacks at eps = sqrt(C·H·W) (the
    diagonal of the pixel cube), attacks without a bound as they are; an explicit step size
    ``alpha`` scales with the budget. Accuracy left above 2% warns, above 10% fails: the attack,
    not the model, is failing (masked gradients, a bug, a step size that cannot reach).
    Pintor et al.'s "unconstrained attack failure". Cost: one run of the attack.

    Papers: Carlini et al. 2019, https://arxiv.org/abs/1902.06705; Pintor et al. 2022, https://arxiv.org/abs/2106.09947
    """
    check_images(x)
    check_labels(y, len(x), inspect_model(model, x))
    opened, budget = _opened(attack, x)
    adv = attack_batches(opened, model, x, y, batch_size=batch_size)
    return _judge_unbounded(_rate(_predict(model, adv) == y.cpu()), len(x), budget, attack)


def incomplete_optimisation(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor | None = None,
    batch_size: int = 256,
) -> Check:
    """Doubling an iterative attack's ``steps`` must not lower robust accuracy noticeably.

    Runs the attack with 2×``steps`` (other parameters as given; a default step size follows
    the steps) on the points that survived the attack (``x_adv``: its output, when already
    computed). Robust accuracy dropping by more than 3 points (and more than 3 images) warns, by
    more than 5 points (and more than 5 images) fails: the attack had not converged. Pintor et al.'s
    "incomplete optimization". A healthy model's PGD-10 is not exactly converged either: on digits
    at ε = 0.1 twenty steps find 0.7 to 1.6 points more than ten, about the spread between two
    random starts (0.9 points), so smaller drops are not flagged. Cost: at most twice the attack,
    on its survivors only.

    Papers: Pintor et al. 2022, https://arxiv.org/abs/2106.09947; Carlini et al. 2019, https://arxiv.org/abs/1902.06705
    """
    if "steps" not in attack.params:
        raise ValueError(f"incomplete_optimisation needs an iterative attack with steps; {attack.label()} has none")
    check_images(x)
    check_labels(y, len(x), inspect_model(model, x))
    if x_adv is None:
        x_adv = attack_batches(attack, model, x, y, batch_size=batch_size)
    n, steps = len(x), attack.params["steps"]
    survived = _predict(model, x_adv) == y.cpu()
    idx = survived.nonzero().flatten()
    still = 0
    if len(idx):
        more = attack.with_params(steps=2 * steps)
        xi, yi = x[idx.to(x.device)], y[idx.to(y.device)]
        still = int((_predict(model, attack_batches(more, model, xi, yi, batch_size=batch_size)) == yi.cpu()).sum())
    before, after = len(idx) / n, still / n
    drop = before - after
    warn_at, fail_at = max(STEPS_WARN, 3 / n), max(STEPS_FAIL, 5 / n)
    # Decided on counts of images, not on floats: a drop of exactly 3 of 64 images must not read as "more than 3".
    dropped, warn_count, fail_count = len(idx) - still, max(STEPS_WARN * n, 3), max(STEPS_FAIL * n, 5)
    values = {
        "steps": steps,
        "accuracy": before,
        "accuracy_2x_steps": after,
        "drop": drop,
        "warn_above": warn_at,
        "fail_above": fail_at,
        "n": n,
    }
    papers = f"{PINTOR_2022}; {CARLINI_2019}"
    if dropped > warn_count:
        detail = (
            f"doubling the steps ({steps} → {2 * steps}) lowers robust accuracy from {before:.1%} to {after:.1%}: "
            "the attack had not converged; raise steps (or the step size) until the number stops moving"
        )
        return Check("incomplete_optimisation", "fail" if dropped > fail_count else "warn", detail, values, papers)
    detail = f"doubling the steps ({steps} → {2 * steps}) changes robust accuracy by {drop:.1%} (within {warn_at:.1%})"
    return Check("incomplete_optimisation", "pass", detail, values, papers)


LINF_LARGEST = 0.3  # MNIST's L∞ budget (Madry et al. 2018), the largest in common use
USUAL_BUDGETS = "L∞ 8/255 (CIFAR-10), 4/255 (ImageNet), 0.3 (MNIST); L2 0.5 (CIFAR-10), 3.0 (ImageNet); L1 12 (CIFAR-10)"


def budget_units(eps: float, norm: str, shape: Sequence[int]) -> Check:
    """The budget must be in the attack's own norm: an L∞ number given to an L2 attack (or back) is accepted
    by every attack and silently measures something else.

    Warns when an L2 budget moves the pixels by less than one grey level on average (ε·255/√d < 1 for
    d = C·H·W values: 8/255 in L2 on a CIFAR image is 0.14 grey levels), when an L1 budget is below
    1 (less than one pixel value from black to white in all), and when an L∞ budget is above 0.3, more
    than RobustBench or the literature use (at 0.5 every pixel may become mid-grey). The advice names
    the usual budgets. Cost: none.

    Papers: Croce et al. 2021, RobustBench, https://arxiv.org/abs/2010.09670; Carlini et al. 2019,
    https://arxiv.org/abs/1902.06705
    """
    eps = parse_eps(eps, limit=math.inf)
    d = math.prod(shape)
    values: dict[str, Any] = {"eps": eps, "norm": norm, "values_per_image": d}
    text = _fmt_eps(eps)
    problem = None
    if norm == "l2":
        grey = eps * 255 / math.sqrt(d)
        values["mean_grey_levels"] = grey
        if grey < 1:
            problem = (
                f"an L2 budget of {text} spread over the {d} values of an image moves them by {grey:.2f} grey levels "
                "on average (root mean square), less than one: is it an L∞ budget"
            )
    elif norm == "l1":
        if eps < 1:
            problem = f"an L1 budget of {text} is less than one pixel value from black to white in all: is it an L∞ budget"
    elif norm == "linf" and eps > LINF_LARGEST:
        problem = (
            f"an L∞ budget of {text} lets every pixel move by more than {LINF_LARGEST:g}, beyond any budget RobustBench "
            "or the literature use: is it an L2 budget"
        )
    papers = f"{CROCE_2021}; {CARLINI_2019}"
    if problem:
        detail = f"{problem}? Give the budget in the attack's own norm (usual budgets: {USUAL_BUDGETS})"
        return Check("budget_units", "warn", detail, values, papers)
    return Check("budget_units", "pass", f"the {NORMS[norm]} budget {text} is in that norm's usual range", values, papers)


def _at_eps(attack: Attack, eps: float | None) -> Attack:
    """The attack at another budget; an explicit step size ``alpha`` scales with it."""
    changes: dict[str, Any] = {"eps": eps}
    alpha = attack.params.get("alpha")
    if alpha is not None and attack.eps and eps:
        changes["alpha"] = alpha * eps / attack.eps
    return attack.with_params(**changes)


def _opened(attack: Attack, x: torch.Tensor) -> tuple[Attack, float | None]:
    """The attack with its budget opened, and that budget (``None``: no bound)."""
    if not attack.bounded:
        return attack, None
    eps_param = next(p for p in attack.declared() if p.name == "eps")
    if eps_param.optional:
        return _at_eps(attack, None), None
    if attack.norm == "linf":
        return _at_eps(attack, 1.0), 1.0
    widest = x[0].numel() if attack.norm == "l1" else math.sqrt(x[0].numel())  # the [0, 1] cube's diameter
    budget = min(widest, eps_param.high or math.inf)
    return _at_eps(attack, budget), budget


def _judge_unbounded(accuracy: float, n: int, budget: float | None, attack: Attack) -> Check:
    instead = getattr(attack, "stands_in_for", None)  # set by `gradient_based`: name the attack that ran
    values = {"accuracy": accuracy, "budget": budget, "attack": attack.label(), "n": n, "stands_in_for": instead}
    papers = f"{CARLINI_2019}; {PINTOR_2022}"
    opened = f"eps={_fmt_eps(budget)}" if budget is not None else "no bound"
    who = "the attack" if not instead else f"{attack.label()}, standing in for {instead} (whose Square breaks anything at an opened budget),"
    if accuracy > UNBOUNDED_WARN:
        detail = (
            f"with its budget opened ({opened}) {who} still leaves {accuracy:.1%} accuracy where ~0% is reachable: "
            "the attack is failing (masked gradients, a bug, too small steps), not the model being robust; fix the "
            "attack before reporting robust accuracy"
        )
        return Check("unbounded_attack", "fail" if accuracy > UNBOUNDED_FAIL else "warn", detail, values, papers)
    detail = (
        f"with its budget opened ({opened}) {who} reaches {accuracy:.1%} accuracy: it finds adversarial examples"
    )
    return Check("unbounded_attack", "pass", detail, values, papers)


NOT_GRADIENT_ONLY = ("autoattack", "autoattack_l2", "autoattack_l1", "square", "square_l2", "square_l1")
"""Attacks that are, or include, gradient-free search: they can break a model whose gradients are masked."""

GRADIENT_ATTACK = {"linf": "pgd", "l2": "pgd_l2", "l1": "apgd_l1"}
"""The gradient attack of each norm (registry names), used where a check needs one: the reference
PGD for L∞ and L2, the authors' APGD for L1 (PGD's fixed steps do not suit the L1 ball's corners)."""


def gradient_based(attack: Attack) -> Attack:
    """``attack`` itself when it follows gradients only; else the reference PGD of its norm and budget.

    AutoAttack's Square reaches ~0% at an opened budget whatever the gradients do, so the opened
    budget check would pass on a model whose gradients are masked (Croce & Hein 2020's Square is a
    check on gradient attacks, not a substitute for one).
    """
    if attack.name not in NOT_GRADIENT_ONLY:
        return attack
    stand_in = make_attack(GRADIENT_ATTACK[attack.norm], eps=attack.eps, steps=20)
    stand_in.stands_in_for = attack.label()  # the check's text names the attack that ran
    return stand_in


def loss_companion(attack: Attack, num_classes: int) -> tuple[Attack | None, str | None]:
    """The same iterative attack on the DLR loss (the margin with fewer than 3 classes), or why there is none."""
    if not attack.bounded or not attack.eps:
        return None, f"{attack.label()} has no budget"
    if "steps" not in attack.params:
        return None, f"{attack.label()} is not iterative"
    if attack.name in NOT_GRADIENT_ONLY:
        return None, f"{attack.label()} runs its own losses (APGD-DLR, the margin)"
    loss = "dlr" if num_classes >= 3 else "margin"
    if "loss" in attack.params:
        if attack.params["loss"] != "ce":
            return None, f"{attack.label()} already ascends the {attack.params['loss']} loss"
        choices = next(p.choices for p in attack.declared() if p.name == "loss")
        if choices and loss not in choices:
            return None, f"{attack.label()} has no {loss} loss (with {num_classes} classes DLR is undefined)"
        return attack.with_params(loss=loss), None
    if attack.norm not in GRADIENT_ATTACK:
        return None, f"no reference attack for the {attack.norm} norm"
    params = {k: attack.params[k] for k in ("steps", "alpha", "random_start", "seed") if k in attack.params}
    return make_attack(GRADIENT_ATTACK[attack.norm], eps=attack.eps, loss=loss, **params), None


def loss_gap(ce_accuracy: float, other_accuracy: float, n: int, loss: str = "dlr") -> Check:
    """The cross-entropy attack must not leave more accuracy than the same attack on a logit-margin loss.

    Cross-entropy reads the outputs through a softmax: a squashed head (sigmoid, tanh), a
    saturated softmax or a large temperature flattens its gradient while the argmax stays, and
    the attack stalls. The margin (Carlini & Wagner 2017) and DLR (Croce & Hein 2020, invariant to
    the outputs' scale) losses do not. Cross-entropy leaving more accuracy beyond `noise_tolerance`
    (z = 2: warn, z = 4: fail) means its number overstates robustness.

    Papers: Carlini & Wagner 2017, https://arxiv.org/abs/1608.04644; Croce & Hein 2020, https://arxiv.org/abs/2003.01690
    """
    return _not_above(
        "loss_gap", ce_accuracy, other_accuracy, n, ("ce_accuracy", f"{loss}_accuracy"),
        "on {n} images the cross-entropy attack leaves {worse:.1%} accuracy but the same attack on the "
        + loss + " loss only {better:.1%} (noise ±{tol:.1%}): the cross-entropy gradient is flattened (a "
        "squashed or saturated output, a temperature), so its number overstates robustness; report the lower one "
        "(attack with loss='" + loss + "', or AutoAttack, whose APGD-DLR does) and check the model returns logits",
        "the cross-entropy attack ({worse:.1%}) is as strong as the same attack on the " + loss
        + " loss ({better:.1%}) on {n} images",
        f"{CARLINI_WAGNER_2017}; {CROCE_2020}",
    )  # fmt: skip


def gradient_free_companion(attack: Attack, queries: int = 200, seed: int = 0) -> tuple[Attack | None, str | None]:
    """The Square attack of the attack's norm and budget (the gradient-free check), or why there is none."""
    if attack.name in NOT_GRADIENT_ONLY:
        return None, f"{attack.label()} is, or includes, the gradient-free Square attack"
    if not attack.bounded or not attack.eps:
        return None, f"{attack.label()} has no budget"
    name = {"linf": "square", "l2": "square_l2", "l1": "square_l1"}.get(attack.norm)
    if name is None:
        return None, f"no gradient-free attack for the {attack.norm} norm"
    return make_attack(name, eps=attack.eps, n_queries=queries, seed=seed), None
