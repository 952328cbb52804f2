"""torchattacks adapters: FGSM, PGD (L∞, L2), DeepFool and AutoAttack, with targeted modes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Attack, require


class _TorchattacksAttack(Attack):
    backend = "torchattacks"
    cls_name: str

    def _kwargs(self, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
        return dict(self.params)

    def _run(self, model, x, y, target):
        ta = require("torchattacks")
        attack = getattr(ta, self.cls_name)(model, **self._kwargs(model, x))
        if target is not None:
            attack.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
        return attack(x, y)


class FGSM(_TorchattacksAttack):
    """torchattacks.FGSM."""

    name = "fgsm"
    norm = "linf"
    targeted = True
    single_step = True
    cls_name = "FGSM"
    defaults = {"eps": 8 / 255}


class PGD(_TorchattacksAttack):
    """torchattacks.PGD (L∞, random start); ``alpha=None`` means 2.5·eps/steps."""

    name = "pgd"
    norm = "linf"
    targeted = True
    cls_name = "PGD"
    defaults = {"eps": 8 / 255, "alpha": None, "steps": 10, "random_start": True}

    def _kwargs(self, model, x):
        p = dict(self.params)
        p["alpha"] = p["alpha"] if p["alpha"] is not None else 2.5 * p["eps"] / p["steps"]
        return p


class PGDL2(PGD):
    """torchattacks.PGDL2 (L2, random start); ``alpha=None`` means 2.5·eps/steps."""

    name = "pgd_l2"
    norm = "l2"
    cls_name = "PGDL2"
    defaults = {"eps": 1.0, "alpha": None, "steps": 10, "random_start": True}


class DeepFool(_TorchattacksAttack):
    """torchattacks.DeepFool (minimal L2 perturbation, untargeted; one image at a time)."""

    name = "deepfool"
    norm = "l2"
    bounded = False
    cls_name = "DeepFool"
    defaults = {"steps": 50, "overshoot": 0.02}


class AutoAttack(_TorchattacksAttack):
    """torchattacks.AutoAttack (standard version: APGD-CE, APGD-T, FAB-T, Square)."""

    name = "autoattack"
    norm = "linf"
    cls_name = "AutoAttack"
    defaults = {"eps": 8 / 255, "version": "standard"}

    def _kwargs(self, model, x):
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
        return {
            "norm": "Linf",
            "eps": self.params["eps"],
            "version": self.params["version"],
            "n_classes": n_classes,
            "seed": self.seed or 0,
        }
