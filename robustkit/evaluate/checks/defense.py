"""Checks on defenses and their training: what a defense costs, and catastrophic overfitting.

Papers: Carlini et al. 2019; Wong, Rice & Kolter 2020.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...core.papers import CARLINI_2019, WONG_2020
from ...defenses.training import overfitting_signs
from .base import Check, _share

DEFENSE_COST = 0.10  # clean-accuracy drop a defense may cost


def defense_cost(undefended_clean: float, defended_clean: float, threshold: float = DEFENSE_COST) -> Check:
    """Clean accuracy a defense costs: a drop above ``threshold`` (default 0.10) warns.

    Robust accuracy alone can hide a defense that ruins the model; report both (Carlini et al. 2019, §3).

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    before, after = _share("undefended_clean", undefended_clean), _share("defended_clean", defended_clean)
    drop = before - after
    values = {"undefended_clean": before, "defended_clean": after, "drop": drop, "threshold": threshold}
    if drop > threshold:
        detail = (
            f"the defense costs {drop:.1%} clean accuracy ({before:.1%} → {after:.1%}), above {threshold:.0%}: "
            "report it next to robust accuracy and weigh the trade-off (or tune the defense's strength)"
        )
        return Check("defense_cost", "warn", detail, values, CARLINI_2019)
    detail = (
        f"the defense costs {drop:.1%} clean accuracy ({before:.1%} → {after:.1%}), within {threshold:.0%}"
        if drop >= 0
        else f"the defense costs no clean accuracy ({before:.1%} → {after:.1%})"
    )
    return Check("defense_cost", "pass", detail, values, CARLINI_2019)


def catastrophic_overfitting(history: Sequence[dict[str, float]]) -> Check:
    """PGD accuracy collapsing while FGSM accuracy holds, in an adversarial-training history.

    Takes ``AdversarialTraining.history`` (rows with ``monitor_fgsm`` and ``monitor_pgd`` at the
    training eps) and applies `robustkit.defenses.training.overfitting_signs`, the rules behind
    ``AdversarialTraining.catastrophic_overfitting``: at the last epoch PGD ≤ ½·FGSM and at least
    0.10 below it (at any accuracy level: PGD 0.00 with FGSM 0.46 counts), or PGD below half its
    best epoch and at least 0.05 below it while FGSM keeps 80% of its best. Either warns.

    Paper: Wong, Rice & Kolter 2020, Fast is better than free: Revisiting adversarial training, https://arxiv.org/abs/2001.03994
    """
    signs = overfitting_signs(list(history))
    if signs is None:
        raise ValueError(
            "catastrophic_overfitting needs history rows with monitor_fgsm and monitor_pgd; "
            "train with adversarial_training(monitor=<held-out ImageSet>)"
        )
    values = dict(signs)
    pgd, fgsm = signs["last_pgd"], signs["last_fgsm"]
    if signs["collapsed"]:
        since = f" since epoch {signs['epoch']}" if signs["epoch"] else ""
        detail = (
            f"catastrophic overfitting{since}: PGD accuracy is {pgd:.1%} while FGSM reads {fgsm:.1%} at the training "
            "eps, so the model only learned to defeat FGSM; train FGSM from a random start with a step of about "
            "1.25·eps (Wong et al.), stop early on PGD accuracy, or train with PGD"
        )
        return Check("catastrophic_overfitting", "warn", detail, values, WONG_2020)
    detail = f"no catastrophic overfitting: at the last epoch PGD accuracy is {pgd:.1%}, FGSM {fgsm:.1%}"
    return Check("catastrophic_overfitting", "pass", detail, values, WONG_2020)
