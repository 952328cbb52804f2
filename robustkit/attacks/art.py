"""ART adapters: FGSM and DeepFool. The numpy bridge lives here and only here."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.backends import require
from ..core.checks import model_device
from ..core.papers import GOODFELLOW_2015, MOOSAVI_2016
from .base import DEEPFOOL_PARAMETERS, Attack, eps_param


def classifier(model: nn.Module, x: torch.Tensor, num_classes: int):
    """Wrap ``model`` as an ART PyTorchClassifier over [0, 1] inputs."""
    require("art")
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if model_device(model).type == "cuda" else "cpu",
    )


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


class FGSM(Attack):
    """ART's FastGradientMethod with the L∞ norm."""

    name = "fgsm"
    backend = "art"
    norm = "linf"
    targeted = True
    parameters = (eps_param(8 / 255, "linf"),)
    paper = GOODFELLOW_2015

    def _run(self, model, x, y, target, num_classes):
        from art.attacks.evasion import FastGradientMethod

        attack = FastGradientMethod(
            classifier(model, x, num_classes),
            norm=np.inf,
            eps=self.params["eps"],
            targeted=target is not None,
            batch_size=len(x),
        )
        labels = y if target is None else target
        adv = attack.generate(_to_numpy(x), y=labels.cpu().numpy())
        return torch.from_numpy(adv).to(x.device)


class DeepFool(Attack):
    """ART's DeepFool (minimal L2 perturbation; untargeted)."""

    name = "deepfool"
    backend = "art"
    norm = "l2"
    bounded = False
    parameters = DEEPFOOL_PARAMETERS
    paper = MOOSAVI_2016

    def _run(self, model, x, y, target, num_classes):
        from art.attacks.evasion import DeepFool as ArtDeepFool

        attack = ArtDeepFool(
            classifier(model, x, num_classes),
            max_iter=self.params["steps"],
            epsilon=self.params["overshoot"],
            nb_grads=min(self.params["candidates"], num_classes),
            batch_size=len(x),
            verbose=False,
        )
        return torch.from_numpy(attack.generate(_to_numpy(x))).to(x.device)
