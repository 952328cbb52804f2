"""ART adapters: FGSM and DeepFool. The numpy bridge lives here and only here."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Attack, require


def classifier(model: nn.Module, x: torch.Tensor, num_classes: int):
    """Wrap ``model`` as an ART PyTorchClassifier over [0, 1] inputs."""
    require("art")
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


class FGSM(Attack):
    """ART's FastGradientMethod with the L∞ norm."""

    name = "fgsm"
    backend = "art"
    norm = "linf"
    targeted = True
    single_step = True
    defaults = {"eps": 8 / 255}

    def _run(self, model, x, y, target):
        from art.attacks.evasion import FastGradientMethod

        est = classifier(model, x, _num_classes(model, x))
        attack = FastGradientMethod(
            est, norm=np.inf, eps=self.params["eps"], targeted=target is not None, batch_size=len(x)
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
    defaults = {"max_iter": 50, "overshoot": 0.02, "nb_grads": 10}

    def _run(self, model, x, y, target):
        from art.attacks.evasion import DeepFool as ArtDeepFool

        est = classifier(model, x, _num_classes(model, x))
        attack = ArtDeepFool(
            est,
            max_iter=self.params["max_iter"],
            epsilon=self.params["overshoot"],
            nb_grads=min(self.params["nb_grads"], est.nb_classes),
            batch_size=len(x),
            verbose=False,
        )
        return torch.from_numpy(attack.generate(_to_numpy(x))).to(x.device)
