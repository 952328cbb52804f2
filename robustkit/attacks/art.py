"""ART adapters: FGSM, DeepFool, Square (L∞), C&W L2, EAD (L1) and HopSkipJump (L2, L∞).
The numpy bridge lives here and only here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..core.backends import require
from ..core.checks import model_device
from ..core.papers import ANDRIUSHCHENKO_2020, CHEN_2020_HSJ, GOODFELLOW_2015, MOOSAVI_2016
from ..core.params import positive_int
from .base import DEEPFOOL_PARAMETERS, SQUARE_PARAMETERS, Attack, eps_param
from .torchattacks import CW as TorchattacksCW
from .torchattacks import EAD as TorchattacksEAD


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


@contextlib.contextmanager
def _seeded_numpy() -> Iterator[None]:
    """Seed numpy's global RNG (ART draws from it) from the call's seeded torch RNG; restore it after."""
    state = np.random.get_state()
    np.random.seed(int(torch.randint(0, 2**32, (), dtype=torch.int64)))
    try:
        yield
    finally:
        np.random.set_state(state)


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
    gradient_free = True
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
        with _seeded_numpy():
            adv = attack.generate(_to_numpy(x), y=y.cpu().numpy())
        return torch.from_numpy(adv).to(x.device)


class CW(Attack):
    """ART's CarliniL2Method: Carlini & Wagner's L2 attack (2017) at a fixed constant ``c``.

    The same problem as torchattacks' `cw_l2`, ‖x' − x‖² + c·f(x') in tanh space, solved by
    ART's gradient descent with a halving/doubling line search instead of Adam; one binary-search
    step, so ``c`` stays fixed as in torchattacks'. Returns the closest misclassified iterate, the
    clean image where none is. Unbounded (minimal perturbation).
    """

    name = "cw_l2"
    backend = "art"
    norm = "l2"
    bounded = False
    targeted = True
    parameters = TorchattacksCW.parameters
    paper = TorchattacksCW.paper

    def _run(self, model, x, y, target, num_classes):
        from art.attacks.evasion import CarliniL2Method

        p = self.params
        attack = CarliniL2Method(
            classifier(model, x, num_classes), confidence=p["kappa"], targeted=target is not None,
            learning_rate=p["lr"], binary_search_steps=1, max_iter=p["steps"], initial_const=p["c"],
            batch_size=len(x), verbose=False,
        )  # fmt: skip
        labels = y if target is None else target
        return torch.from_numpy(attack.generate(_to_numpy(x), y=_one_hot(labels, num_classes))).to(x.device)


class EAD(Attack):
    """ART's ElasticNet with decision_rule="L1": the elastic-net attack of Chen et al. 2018.

    The twin of torchattacks' EADL1 (`ead`): ISTA on c·f(x') + ‖x' − x‖² + β‖x' − x‖₁ with a
    binary search over c, keeping the successful iterate of least L1 distance. Unbounded.
    """

    name = "ead"
    backend = "art"
    norm = "l1"
    bounded = False
    targeted = True
    parameters = TorchattacksEAD.parameters
    paper = TorchattacksEAD.paper

    def _run(self, model, x, y, target, num_classes):
        from art.attacks.evasion import ElasticNet

        p = self.params
        attack = ElasticNet(
            classifier(model, x, num_classes), confidence=p["kappa"], targeted=target is not None,
            learning_rate=p["lr"], binary_search_steps=p["search_steps"], max_iter=p["steps"], beta=p["beta"],
            initial_const=p["c"], batch_size=len(x), decision_rule="L1", verbose=False,
        )  # fmt: skip
        labels = y if target is None else target
        return torch.from_numpy(attack.generate(_to_numpy(x), y=_one_hot(labels, num_classes))).to(x.device)


HSJ_PARAMETERS = (  # ART's defaults are 50, 10000 and 100: a GPU budget; these fit a CPU run on small images
    positive_int("max_iter", 10, "iterations (gradient estimate, geometric step, binary search); ART: 50"),
    positive_int("max_eval", 1000, "queries at most per gradient estimate; ART: 10000"),
    positive_int("init_eval", 100, "queries of the first gradient estimate (grows as √iteration); ART: 100"),
    positive_int("init_size", 100, "random uniform images tried to find a misclassified starting point"),
)


class HopSkipJump(Attack):
    """ART's HopSkipJump (Chen, Jordan & Wainwright 2020): decision-based black box, L2, untargeted.

    Uses only the predicted label: from a misclassified starting point it walks along the
    decision boundary, estimating its normal from ``init_eval``…``max_eval`` label queries per
    iteration, and shrinks the distance to the clean image. Unbounded (minimal perturbation).
    The starting point is the first of ``init_size`` uniform-noise images the model misclassifies,
    drawn here from the call's seeded torch RNG (ART draws it from an unseeded generator); images
    with none, and images the model already misclassifies, come back unchanged. ART's gradient
    estimates draw from numpy's global RNG, seeded from the call's seed and restored after.
    """

    name = "hop_skip_jump"
    gradient_free = True
    backend = "art"
    norm = "l2"
    bounded = False
    parameters = HSJ_PARAMETERS
    paper = CHEN_2020_HSJ

    def _run(self, model, x, y, target, num_classes):
        from art.attacks.evasion import HopSkipJump as ArtHopSkipJump

        p = self.params
        adv = x.clone()
        with torch.no_grad():
            todo = (model(x).argmax(1) == y).nonzero().flatten()
            starts = [_noise_start(model, x[i], y[i], p["init_size"]) for i in todo.tolist()]
        found = [j for j, s in enumerate(starts) if s is not None]
        if not found:
            return adv
        todo = todo[found]
        attack = ArtHopSkipJump(
            classifier(_InputDtype(model, x.dtype), x, num_classes), batch_size=p["max_eval"], targeted=False,
            norm=2 if self.norm == "l2" else np.inf, max_iter=p["max_iter"], max_eval=p["max_eval"],
            init_eval=p["init_eval"], init_size=p["init_size"], verbose=False,
        )  # fmt: skip
        init = _to_numpy(torch.stack([starts[j] for j in found]))
        with _seeded_numpy():
            out = attack.generate(_to_numpy(x[todo]), y=_one_hot(y[todo], num_classes), x_adv_init=init)
        adv[todo] = torch.from_numpy(out).to(x.device, x.dtype)
        return adv


class _InputDtype(nn.Module):
    """``model`` on inputs cast to ``dtype``: ART's HopSkipJump queries it with float64 arrays."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype))


def _noise_start(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tries: int) -> torch.Tensor | None:
    """The first of ``tries`` uniform-noise images (torch's RNG) that ``model`` does not label ``y``."""
    noise = torch.rand((tries, *x.shape), device=x.device, dtype=x.dtype)
    wrong = (model(noise).argmax(1) != y).nonzero().flatten()
    return noise[wrong[0]] if len(wrong) else None


class HopSkipJumpLinf(HopSkipJump):
    """ART's HopSkipJump (Chen, Jordan & Wainwright 2020) with norm=inf: decision-based black box, L∞."""

    name = "hop_skip_jump_linf"
    norm = "linf"


def _one_hot(labels: torch.Tensor, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels.cpu().numpy()]
