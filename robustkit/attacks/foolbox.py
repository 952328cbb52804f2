"""foolbox adapters: DDN (decoupled direction and norm, L2) and PGD (L∞, L2)."""

from __future__ import annotations

from ..core.backends import require
from ..core.papers import MADRY_2018, RONY_2019
from ..core.params import Param, positive_int
from .base import ALPHA, RANDOM_START, STEPS, Attack, default_alpha, eps_param


def _run_foolbox(attack, model, x, y, target, eps):
    fb = require("foolbox")
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
    if target is None:
        criterion = fb.criteria.Misclassification(y)
    else:
        criterion = fb.criteria.TargetedMisclassification(target)
    _, clipped, _ = attack(fmodel, x, criterion, epsilons=eps)
    return clipped


class DDN(Attack):
    """foolbox.attacks.DDNAttack: the smallest L2 perturbation that succeeds (``eps`` caps it)."""

    name = "ddn"
    backend = "foolbox"
    norm = "l2"
    targeted = True
    parameters = (
        eps_param(None, "l2", optional=True),
        positive_int("steps", 100, "iterations"),
        Param("init_epsilon", 1.0, "initial L2 norm of the perturbation", low=0, low_open=True),
        Param("gamma", 0.05, "factor by which the norm changes per step", low=0, high=1, low_open=True),
    )
    paper = RONY_2019

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        return self.params["eps"] is not None

    def _run(self, model, x, y, target, num_classes):
        fb = require("foolbox")
        p = self.params
        attack = fb.attacks.DDNAttack(init_epsilon=p["init_epsilon"], steps=p["steps"], gamma=p["gamma"])
        return _run_foolbox(attack, model, x, y, target, p["eps"])


class PGD(Attack):
    """foolbox.attacks.LinfPGD (random start)."""

    name = "pgd"
    backend = "foolbox"
    norm = "linf"
    targeted = True
    parameters = (eps_param(8 / 255, "linf"), ALPHA, STEPS, RANDOM_START)
    paper = MADRY_2018
    attack_cls = "LinfPGD"

    def _run(self, model, x, y, target, num_classes):
        fb = require("foolbox")
        p = self.params
        attack = getattr(fb.attacks, self.attack_cls)(
            abs_stepsize=default_alpha(p), steps=p["steps"], random_start=p["random_start"]
        )
        return _run_foolbox(attack, model, x, y, target, p["eps"])


class PGDL2(PGD):
    """foolbox.attacks.L2PGD (random start)."""

    name = "pgd_l2"
    norm = "l2"
    parameters = (eps_param(1.0, "l2"), ALPHA, STEPS, RANDOM_START)
    attack_cls = "L2PGD"
