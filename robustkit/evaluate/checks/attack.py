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

from ...attacks.base import Attack, attack_batches
from ...core.checks import check_images, check_labels, inspect_model, parse_eps
from ...core.papers import CARLINI_2019, PINTOR_2022
from ..robustness import _predict, _rate
from .base import Z_FAIL, Check, _check_n, _fmt_eps, _not_above, _share, noise_tolerance

UNBOUNDED_WARN, UNBOUNDED_FAIL = 0.02, 0.10  # accuracy left by the attack with its budget opened
STEPS_WARN, STEPS_FAIL = 0.01, 0.05  # robust-accuracy drop when the steps double (and 2 / 4 points)


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
    computed). Robust accuracy dropping by more than 1% and more than 2 points warns, by more
    than 5% and more than 4 points fails: the attack had not converged. Pintor et al.'s
    "incomplete optimization". Cost: at most twice the attack, on its survivors only.

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
    warn_at, fail_at = max(STEPS_WARN, 2 / n), max(STEPS_FAIL, 4 / n)
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
    if drop > warn_at:
        detail = (
            f"doubling the steps ({steps} → {2 * steps}) lowers robust accuracy from {before:.1%} to {after:.1%}: "
            "the attack had not converged; raise steps (or the step size) until the number stops moving"
        )
        return Check("incomplete_optimisation", "fail" if drop > fail_at else "warn", detail, values, papers)
    detail = f"doubling the steps ({steps} → {2 * steps}) changes robust accuracy by {drop:.1%} (within {warn_at:.1%})"
    return Check("incomplete_optimisation", "pass", detail, values, papers)


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
    budget = min(math.sqrt(x[0].numel()), eps_param.high or math.inf)
    return _at_eps(attack, budget), budget


def _judge_unbounded(accuracy: float, n: int, budget: float | None, attack: Attack) -> Check:
    values = {"accuracy": accuracy, "budget": budget, "attack": attack.label(), "n": n}
    papers = f"{CARLINI_2019}; {PINTOR_2022}"
    opened = f"eps={_fmt_eps(budget)}" if budget is not None else "no bound"
    if accuracy > UNBOUNDED_WARN:
        detail = (
            f"with its budget opened ({opened}) the attack still leaves {accuracy:.1%} accuracy where ~0% is reachable: "
            "the attack is failing (masked gradients, a bug, too small steps), not the model being robust; fix the "
            "attack before reporting robust accuracy"
        )
        return Check("unbounded_attack", "fail" if accuracy > UNBOUNDED_FAIL else "warn", detail, values, papers)
    detail = (
        f"with its budget opened ({opened}) the attack reaches {accuracy:.1%} accuracy: it finds adversarial examples"
    )
    return Check("unbounded_attack", "pass", detail, values, papers)
