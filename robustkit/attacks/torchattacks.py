"""torchattacks adapters: FGSM, PGD (L∞, L2), EOT-PGD, DeepFool, Square (L∞, L2), APGD, APGD-T, FAB, FAB-T,
C&W L2, EAD (L1) and AutoAttack, with targeted modes."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.backends import require
from ..core.papers import (
    ANDRIUSHCHENKO_2020,
    ATHALYE_2018,
    CARLINI_WAGNER_2017,
    CHEN_2018_EAD,
    CROCE_2020,
    CROCE_HEIN_2020_FAB,
    GOODFELLOW_2015,
    MADRY_2018,
    MOOSAVI_2016,
)
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
    gradient_free = True
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


_TA_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


_BUDGETS = {"linf": 8 / 255, "l2": 0.5, "l1": 12.0}  # RobustBench's, as the official AutoAttack's
# The official APGD's, APGD-T's, FAB's and FAB-T's parameters (robustkit.attacks.autoattack), less
# large_eps, which torchattacks lacks; tests/test_attack_breadth.py checks that they stay the same.
_STEPS = positive_int("steps", 100, "iterations (AutoAttack: 100)")
_RESTARTS = positive_int("restarts", 1, "restarts (AutoAttack standard: 1; plus: 5)")
_RHO = Param("rho", 0.75, "step-size halving threshold (the paper's ρ)", low=0, high=1, low_open=True)
_TARGET_CLASSES = positive_int("target_classes", 9, "runner-up classes tried as targets, one after another")
_EOT_SAMPLES = positive_int("eot_samples", 1, "gradients averaged per step (AutoAttack rand: 20)")
_LOSS = Param("loss", "ce", "loss to ascend: cross-entropy or DLR", types=(str,), choices=("ce", "dlr"))


def _apgd_parameters(norm: str, targeted: bool = False) -> tuple[Param, ...]:
    middle = (_TARGET_CLASSES,) if targeted else (_LOSS,)
    return (eps_param(_BUDGETS[norm], norm), _STEPS, _RESTARTS, *middle, _RHO, _EOT_SAMPLES)


def _fab_parameters(norm: str, targeted: bool = False) -> tuple[Param, ...]:
    return (eps_param(_BUDGETS[norm], norm), _STEPS, _RESTARTS, *((_TARGET_CLASSES,) if targeted else ()))


class APGD(_TorchattacksAttack):
    """torchattacks.APGD: Auto-PGD (Croce & Hein 2020), L∞, untargeted, on the CE or DLR loss.

    PGD whose step size halves when progress stalls, with momentum. The twin of the official
    ``apgd`` (backend autoattack), with its parameters and defaults (100 iterations) except
    ``large_eps``, which torchattacks lacks. torchattacks has no L1 APGD.
    """

    name = "apgd"
    norm = "linf"
    cls_name = "APGD"
    parameters = _apgd_parameters("linf")
    paper = CROCE_2020

    def _kwargs(self, num_classes):
        p = self.params
        kwargs = {"norm": _TA_NORMS[self.norm], "eps": p["eps"], "steps": p["steps"], "n_restarts": p["restarts"]}
        kwargs |= {
            "rho": p["rho"],
            "eot_iter": p["eot_samples"],
            "seed": draw_seed() if p["seed"] is None else p["seed"],
        }
        if "loss" in p:
            kwargs["loss"] = p["loss"]
        return kwargs


class APGDL2(APGD):
    """torchattacks.APGD with norm='L2': Auto-PGD (Croce & Hein 2020), L2, untargeted."""

    name = "apgd_l2"
    norm = "l2"
    parameters = _apgd_parameters("l2")


class APGDT(APGD):
    """torchattacks.APGDT: APGD-T (Croce & Hein 2020), L∞; an untargeted attack for the user.

    APGD on the targeted DLR loss towards each of the ``target_classes`` most likely classes after
    the predicted one in turn, keeping the first success. The twin of the official ``apgd_t``,
    with its parameters except ``large_eps``, which torchattacks lacks.
    """

    name = "apgd_t"
    cls_name = "APGDT"
    parameters = _apgd_parameters("linf", targeted=True)

    def _run(self, model, x, y, target, num_classes):
        attack = require("torchattacks").APGDT(model, **self._kwargs(num_classes), n_classes=num_classes)
        attack.n_target_classes = min(self.params["target_classes"], num_classes - 1)  # torchattacks: n_classes - 1
        return attack(x, y)


class APGDTL2(APGDT):
    """torchattacks.APGDT with norm='L2': APGD-T (Croce & Hein 2020), L2."""

    name = "apgd_t_l2"
    norm = "l2"
    parameters = _apgd_parameters("l2", targeted=True)


class FAB(_TorchattacksAttack):
    """torchattacks.FAB: the fast adaptive boundary attack (Croce & Hein 2020), L∞, untargeted.

    Minimal perturbation; an image it cannot flip within ``eps`` comes back unchanged. The twin
    of the official ``fab``, with its parameters (torchattacks' ``alpha_max``, ``eta`` and ``beta``
    stay at the authors' defaults). torchattacks' FAB has no working L1 mode: its restart loop
    measures only L∞ and L2 norms.
    """

    name = "fab"
    norm = "linf"
    cls_name = "FAB"
    parameters = _fab_parameters("linf")
    paper = CROCE_HEIN_2020_FAB
    multi_targeted = False

    def _run(self, model, x, y, target, num_classes):
        p = self.params
        attack = require("torchattacks").FAB(
            model, norm=_TA_NORMS[self.norm], eps=p["eps"], steps=p["steps"], n_restarts=p["restarts"],
            seed=draw_seed() if p["seed"] is None else p["seed"], multi_targeted=self.multi_targeted,
            n_classes=num_classes,
        )  # fmt: skip
        if self.multi_targeted:
            attack.n_target_classes = min(p["target_classes"], num_classes - 1)
        return attack(x, y)


class FABL2(FAB):
    """torchattacks.FAB with norm='L2': FAB (Croce & Hein 2020), L2, untargeted."""

    name = "fab_l2"
    norm = "l2"
    parameters = _fab_parameters("l2")


class FABT(FAB):
    """torchattacks.FAB with multi_targeted=True: FAB-T (Croce & Hein 2020), L∞.

    FAB towards each of the ``target_classes`` most likely classes after the predicted one in
    turn; an untargeted attack for the user. The twin of the official ``fab_t``.
    """

    name = "fab_t"
    parameters = _fab_parameters("linf", targeted=True)
    multi_targeted = True


class FABTL2(FABT):
    """torchattacks.FAB with norm='L2' and multi_targeted=True: FAB-T (Croce & Hein 2020), L2."""

    name = "fab_t_l2"
    norm = "l2"
    parameters = _fab_parameters("l2", targeted=True)


CW_PARAMETERS = (  # torchattacks' CW and ART's CarliniL2Method (one binary-search step) solve the same problem
    Param("c", 1.0, "weight of the misclassification term against the squared L2 distance (the paper's c)", low=0,
          low_open=True),
    Param("kappa", 0.0, "confidence: the logit margin past the boundary that stops rewarding (the paper's κ)", low=0),
    positive_int("steps", 200, "optimisation steps (200: ~0 accuracy left on digits; the paper: 10000 over 9 values of c)"),
    Param("lr", 0.01, "learning rate (torchattacks: Adam's; ART: its line search's initial step)", low=0,
          low_open=True),
)  # fmt: skip


class CW(_TorchattacksAttack):
    """torchattacks.CW: Carlini & Wagner's L2 attack (2017) at a fixed constant ``c``.

    Minimises ‖x' − x‖² + c·f(x') over tanh-space images with Adam, f the logit margin capped
    at −κ; returns the closest misclassified iterate, the clean image where none is. Unbounded
    (minimal perturbation). torchattacks has no binary search over c (the paper has one), and
    stops early when the batch's total cost rose over the last tenth of the steps: on digits
    (100 images, c 1) 100 steps left 0.09 accuracy, 200 steps 0.01 (ART's: 0.01 both). Targeted,
    the early stop bites harder: c 10 reached 0.62 of random targets where ART's reached 0.88.
    """

    name = "cw_l2"
    norm = "l2"
    bounded = False
    targeted = True
    cls_name = "CW"
    parameters = CW_PARAMETERS
    paper = CARLINI_WAGNER_2017


EAD_PARAMETERS = (  # torchattacks' EADL1 and ART's ElasticNet(decision_rule="L1") take the same ones
    Param("beta", 1e-3, "weight of the L1 term in the elastic-net distance (the paper's β)", low=0),
    Param("c", 1e-3, "initial weight of the misclassification term, then binary-searched (the paper's c)", low=0,
          low_open=True),
    Param("kappa", 0.0, "confidence: the logit margin past the boundary that stops rewarding (the paper's κ)", low=0),
    positive_int("search_steps", 9, "binary-search steps over c"),
    positive_int("steps", 100, "ISTA iterations per binary-search step"),
    Param("lr", 0.01, "initial step size of the iterative shrinkage (square-root decay)", low=0, low_open=True),
)  # fmt: skip


class EAD(_TorchattacksAttack):
    """torchattacks.EADL1: the elastic-net attack of Chen et al. 2018, L1 decision rule.

    FISTA on c·f(x') + ‖x' − x‖² + β‖x' − x‖₁ with a binary search over c; among the successful
    iterates it keeps the one of least L1 distance. Unbounded (minimal perturbation). Runs
    without torchattacks' early abort (ART has none), so both backends take the same steps.
    torchattacks' EADL1 moves its reference image by the first gradient step (its iterate is an
    ``nn.Parameter`` sharing the clean images' memory) and does not restart the iterate between
    binary-search steps: it needs more steps than ART's (the default backend) for the same result,
    and its iterates can leave [0, 1] around the moved reference, so an image whose clipped output
    is classified correctly may come back perturbed (ART's come back clean).
    """

    name = "ead"
    norm = "l1"
    bounded = False
    targeted = True
    cls_name = "EADL1"
    parameters = EAD_PARAMETERS
    paper = CHEN_2018_EAD

    def _kwargs(self, num_classes):
        p = self.params
        return {
            "kappa": p["kappa"], "lr": p["lr"], "binary_search_steps": p["search_steps"],
            "max_iterations": p["steps"], "abort_early": False, "initial_const": p["c"], "beta": p["beta"],
        }  # fmt: skip
