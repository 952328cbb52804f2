"""torchattacks adapters: FGSM, PGD (L∞, L2), EOT-PGD, DeepFool, Square (L∞, L2) and AutoAttack, with targeted modes."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.backends import require
from ..core.papers import ANDRIUSHCHENKO_2020, ATHALYE_2018, CROCE_2020, GOODFELLOW_2015, MADRY_2018, MOOSAVI_2016
from ..core.params import Param, positive_int
from .base import (
    ALPHA,
    EOT_SAMPLES,
    OVERSHOOT,
    RANDOM_START,
    SQUARE_PARAMETERS,
    STEPS,
    Attack,
    default_alpha,
    draw_seed,
    eps_param,
)


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


class EOTPGD(PGD):
    """torchattacks.EOTPGD: PGD (L∞) whose steps sum the gradients of ``eot_samples`` passes (Athalye et al. 2018)."""

    name = "eot_pgd"
    cls_name = "EOTPGD"
    parameters = (eps_param(8 / 255, "linf"), ALPHA, STEPS, EOT_SAMPLES, RANDOM_START)
    paper = ATHALYE_2018

    def _kwargs(self, num_classes):
        kwargs = super()._kwargs(num_classes)
        kwargs["eot_iter"] = kwargs.pop("eot_samples")
        return kwargs


class DeepFool(_TorchattacksAttack):
    """torchattacks.DeepFool (minimal L2 perturbation, untargeted; one image at a time)."""

    name = "deepfool"
    norm = "l2"
    bounded = False
    cls_name = "DeepFool"
    parameters = (positive_int("steps", 50, "iterations at most"), OVERSHOOT)
    paper = MOOSAVI_2016


class Square(_TorchattacksAttack):
    """torchattacks.Square: Square Attack (Andriushchenko et al. 2020), score-based random search, L∞.

    Gradient-free: it only queries the model's logits, so it is the check on a gradient attack
    that a masked gradient fooled. Each of ``n_queries`` iterations changes one random square
    of the perturbation (side shrinking with ``p_init``'s schedule) and keeps it if the margin
    loss falls; images already misclassified stop querying. One restart; torchattacks' default
    is 5000 queries (as AutoAttack's), robustkit's 1000 keeps a CPU run affordable.
    """

    name = "square"
    norm = "linf"
    targeted = True
    cls_name = "Square"
    parameters = (eps_param(8 / 255, "linf"), *SQUARE_PARAMETERS)
    paper = ANDRIUSHCHENKO_2020

    def _kwargs(self, num_classes):
        p = self.params
        return {
            "norm": "Linf" if self.norm == "linf" else "L2",
            "eps": p["eps"],
            "n_queries": p["n_queries"],
            "p_init": p["p_init"],
            "n_restarts": 1,
            "loss": "margin",
            "seed": draw_seed() if p["seed"] is None else p["seed"],
        }


class SquareL2(Square):
    """torchattacks.Square with norm='L2': Square Attack (Andriushchenko et al. 2020), L2."""

    name = "square_l2"
    norm = "l2"
    parameters = (eps_param(0.5, "l2"), *SQUARE_PARAMETERS)


class AutoAttack(_TorchattacksAttack):
    """torchattacks.AutoAttack: its 10-iteration re-implementation of Croce & Hein's ensemble.

    Standard version: APGD-CE, APGD-T, FAB-T and Square (5000 queries), with torchattacks'
    10 APGD iterations where the official AutoAttack runs 100, so it can overstate robust
    accuracy against it. ``seed=None`` draws the suite's seed from the global torch RNG.
    """

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
        return {
            "norm": "Linf",
            "eps": p["eps"],
            "version": p["version"],
            "n_classes": num_classes,
            "seed": draw_seed() if p["seed"] is None else p["seed"],
        }
