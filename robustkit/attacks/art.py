"""ART adapters: FGSM, DeepFool and Square (L∞). The numpy bridge lives here and only here."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.backends import require
from ..core.checks import model_device
from ..core.papers import ANDRIUSHCHENKO_2020, GOODFELLOW_2015, MOOSAVI_2016
from .base import DEEPFOOL_PARAMETERS, SQUARE_PARAMETERS, Attack, eps_param


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


class Square(Attack):
    """ART's SquareAttack (Andriushchenko et al. 2020), L∞, untargeted: cross-checks torchattacks' Square.

    ART draws its squares from numpy's global RNG; the call seeds it from its own seeded torch
    RNG and restores numpy's state afterwards. ART's L2 Square is not offered: on 8×8 digits it
    divides by zero and left 0.51 accuracy at eps 1 where torchattacks' left 0.19 (100 images).
    """

    name = "square"
    backend = "art"
    norm = "linf"
    parameters = (eps_param(8 / 255, "linf"), *SQUARE_PARAMETERS)
    paper = ANDRIUSHCHENKO_2020

    def _run(self, model, x, y, target, num_classes):
        from art.attacks.evasion import SquareAttack

        p = self.params
        attack = SquareAttack(
            classifier(model, x, num_classes),
            norm=np.inf,
            max_iter=p["n_queries"],
            eps=p["eps"],
            p_init=p["p_init"],
            nb_restarts=1,
            batch_size=len(x),
            verbose=False,
        )
        state = np.random.get_state()
        np.random.seed(int(torch.randint(0, 2**32, (), dtype=torch.int64)))  # the call's seeded torch RNG
        try:
            adv = attack.generate(_to_numpy(x), y=y.cpu().numpy())
        finally:
            np.random.set_state(state)
        return torch.from_numpy(adv).to(x.device)
