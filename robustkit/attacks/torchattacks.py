"""torchattacks adapters: FGSM, PGD (L∞, L2), DeepFool and AutoAttack, with targeted modes."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.backends import require
from ..core.papers import CROCE_2020, GOODFELLOW_2015, MADRY_2018, MOOSAVI_2016
from ..core.params import Param, positive_int
from .base import ALPHA, OVERSHOOT, RANDOM_START, STEPS, Attack, default_alpha, eps_param


class _TorchattacksAttack(Attack):
    backend = "torchattacks"
    cls_name: str

    def _kwargs(self, num_classes: int) -> dict[str, Any]:
        """The backend's keyword arguments (its own names) from our parameters."""
        return {k: v for k, v in self.params.items() if k != "seed"}

    def _run(self, model: nn.Module, x, y, target, num_classes):
        ta = require("torchattacks")
        attack = getattr(ta, self.cls_name)(model, **self._kwargs(num_classes))
        if target is not None:
            attack.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
        return attack(x, y)


class FGSM(_TorchattacksAttack):
    """torchattacks.FGSM."""

    name = "fgsm"
    norm = "linf"
    targeted = True
    cls_name = "FGSM"
    parameters = (eps_param(8 / 255, "linf"),)
    paper = GOODFELLOW_2015


class PGD(_TorchattacksAttack):
    """torchattacks.PGD (L∞, random start)."""

    name = "pgd"
    norm = "linf"
    targeted = True
    cls_name = "PGD"
    parameters = (eps_param(8 / 255, "linf"), ALPHA, STEPS, RANDOM_START)
    paper = MADRY_2018

    def _kwargs(self, num_classes):
        return {**super()._kwargs(num_classes), "alpha": default_alpha(self.params)}


class PGDL2(PGD):
    """torchattacks.PGDL2 (L2, random start)."""

    name = "pgd_l2"
    norm = "l2"
    cls_name = "PGDL2"
    parameters = (eps_param(1.0, "l2"), ALPHA, STEPS, RANDOM_START)


class DeepFool(_TorchattacksAttack):
    """torchattacks.DeepFool (minimal L2 perturbation, untargeted; one image at a time)."""

    name = "deepfool"
    norm = "l2"
    bounded = False
    cls_name = "DeepFool"
    parameters = (positive_int("steps", 50, "iterations at most"), OVERSHOOT)
    paper = MOOSAVI_2016


class AutoAttack(_TorchattacksAttack):
    """torchattacks.AutoAttack (standard version: APGD-CE, APGD-T, FAB-T, Square)."""

    name = "autoattack"
    norm = "linf"
    cls_name = "AutoAttack"
    parameters = (
        eps_param(8 / 255, "linf"),
        Param("version", "standard", "attack suite", types=(str,), choices=("standard", "plus", "rand")),
    )
    paper = CROCE_2020

    def _kwargs(self, num_classes):
        p = self.params
        return {"norm": "Linf", "eps": p["eps"], "version": p["version"], "n_classes": num_classes, "seed": p["seed"] or 0}
