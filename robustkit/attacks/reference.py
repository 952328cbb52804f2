"""robustkit's own attacks: FGSM (cross-checks the backends), PGD with per-example seeded random
starts, and a DeepFool that iterates only the images not yet fooled."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import preserved_state
from ..core.papers import ATHALYE_2018, CARLINI_WAGNER_2017, CROCE_2020, GOODFELLOW_2015, MADRY_2018, MOOSAVI_2016
from .base import (
    ALPHA,
    DEEPFOOL_PARAMETERS,
    EOT_SAMPLES,
    RANDOM_START,
    STEPS,
    Attack,
    default_alpha,
    eps_param,
    example_generators,
)
from .losses import LOSS, attack_loss, check_loss


def gradient_sign_and_logits(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The FGSM step direction and the clean logits of the same forward pass.

    The direction is sign ∇ₓ L(x, y) untargeted, −sign ∇ₓ L(x, target) targeted; L is the
    mean cross-entropy, as in torchattacks and ART, so the signs agree exactly.
    """
    x = x.detach().requires_grad_(True)
    labels = y if target is None else target
    logits = model(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), x)
    sign = grad.sign()
    return (sign if target is None else -sign), logits.detach()


class FGSM(Attack):
    """Fast gradient sign method: x' = clip(x ± eps·sign ∇ₓL, 0, 1)."""

    name = "fgsm"
    backend = "reference"
    norm = "linf"
    targeted = True
    parameters = (eps_param(8 / 255, "linf"),)
    paper = GOODFELLOW_2015

    def direction(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The step direction, computed once and reusable for every eps (image grids, budgets)."""
        with preserved_state(model):
            model.eval()
            return gradient_sign_and_logits(model, x, y, target)[0]

    def _run(self, model, x, y, target, num_classes):
        direction, _ = gradient_sign_and_logits(model, x, y, target)
        return (x + self.params["eps"] * direction).clamp(0.0, 1.0)


def _l2_norms(t: torch.Tensor) -> torch.Tensor:
    """Per-image L2 norms, shaped to broadcast against ``t`` (N×1×1×1)."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


class PGD(Attack):
    """Projected gradient descent, L∞ (Madry et al. 2018), with per-example seeded random starts.

    x₀ = clip(x + U(−eps, eps)); x_{t+1} = clip(x + clamp(x_t + alpha·sign ∇ₓL(x_t) − x, ±eps), 0, 1),
    the order torchattacks.PGD uses, so without a random start the two agree exactly. L is the
    ``loss``, summed over the batch: the cross-entropy (targeted: −L at the target), the logit
    margin (Carlini & Wagner 2017) or DLR (Croce & Hein 2020), whose gradients survive a saturated
    output (`robustkit.attacks.losses`). An image's steps do not depend on the other images of its
    batch, and with an integer ``seed`` image i's random start comes from a generator seeded by
    (seed, its global index): the same attack in any batch.
    """

    name = "pgd"
    backend = "reference"
    norm = "linf"
    targeted = True
    per_example_seeds = True
    parameters = (eps_param(8 / 255, "linf"), ALPHA, STEPS, RANDOM_START, LOSS)
    paper = f"{MADRY_2018}; {CARLINI_WAGNER_2017}; {CROCE_2020}"  # the attack; its margin and DLR losses

    def _run(self, model, x, y, target, num_classes):
        return self._run_indexed(model, x, y, target, num_classes, torch.arange(len(x)))

    def _run_indexed(self, model, x, y, target, num_classes, index):
        p = self.params
        check_loss(self.label(), p["loss"], num_classes, target is not None)
        alpha = default_alpha(p)
        adv = (x + self.random_start(x, index)).clamp(0.0, 1.0) if p["random_start"] else x.clone()
        for _ in range(p["steps"]):
            adv = self._step(x, adv, self.gradient(model, adv, y, target), alpha)
        return adv

    def gradient(
        self, model: nn.Module, adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """∇ₓ of the declared ``loss`` summed over the batch, at ``adv`` (one forward and backward pass)."""
        adv = adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(attack_loss(model(adv), y, target, self.params["loss"]), adv)
        return grad

    def random_start(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The random start's offsets (image i's from (seed, index[i]); the global RNG when seed is None)."""
        if self.seed is None:
            return self._draw(x.shape, x.dtype, None).to(x.device)
        return torch.stack([self._draw(x.shape[1:], x.dtype, g) for g in example_generators(self.seed, index)]).to(
            x.device
        )

    def _draw(self, shape, dtype, generator):
        eps = self.params["eps"]
        return torch.empty(shape, dtype=dtype).uniform_(-eps, eps, generator=generator)

    def _step(self, x, adv, grad, alpha):
        eps = self.params["eps"]
        delta = (adv + alpha * grad.sign() - x).clamp(-eps, eps)
        return (x + delta).clamp(0.0, 1.0)


class PGDL2(PGD):
    """Projected gradient descent, L2 (Madry et al. 2018), with per-example seeded random starts.

    Follows torchattacks.PGDL2: the random start is a uniform direction scaled by eps·U(0, 1);
    each step moves alpha along ∇ₓL / (‖∇ₓL‖₂ + 1e-10), then projects onto the eps-ball and [0, 1].
    """

    name = "pgd_l2"
    norm = "l2"
    parameters = (eps_param(1.0, "l2"), ALPHA, STEPS, RANDOM_START, LOSS)

    def _draw(self, shape, dtype, generator):
        eps = self.params["eps"]
        if generator is None:  # a batch from the global RNG, as torchattacks draws it
            direction = torch.empty(shape, dtype=dtype).normal_()
            radius = torch.empty(shape[0], dtype=dtype).uniform_(0, 1).view(-1, *([1] * (len(shape) - 1)))
            return direction * radius / _l2_norms(direction) * eps
        direction = torch.empty(shape, dtype=dtype).normal_(generator=generator)
        radius = torch.empty((), dtype=dtype).uniform_(0, 1, generator=generator)
        return direction * (radius / direction.norm() * eps)

    def _step(self, x, adv, grad, alpha):
        eps = self.params["eps"]
        delta = adv + alpha * grad / (_l2_norms(grad) + 1e-10) - x
        delta = delta * (eps / _l2_norms(delta).clamp_min(1e-12)).clamp(max=1.0)
        return (x + delta).clamp(0.0, 1.0)


class EOTPGD(PGD):
    """PGD (L∞) with Expectation over Transformation (Athalye et al. 2018), per-example seeded starts.

    Each step takes the sign of the gradient summed over ``eot_samples`` forward and backward
    passes at the same point (the sign of their mean), so a model that randomises its input or
    weights is attacked through the average of its randomness rather than one draw of it. The
    model's own randomness comes from the call's RNG (seeded by ``seed``). On a deterministic
    model it equals `PGD` (the sum of equal gradients has their sign). As torchattacks.EOTPGD,
    whose ``eot_iter`` is ``eot_samples``, with the reference PGD's summed loss and random starts.
    """

    name = "eot_pgd"
    parameters = (eps_param(8 / 255, "linf"), ALPHA, STEPS, EOT_SAMPLES, RANDOM_START, LOSS)
    paper = f"{ATHALYE_2018}; {MADRY_2018}"

    def gradient(self, model, adv, y, target):
        total = super().gradient(model, adv, y, target)
        for _ in range(self.params["eot_samples"] - 1):
            total += super().gradient(model, adv, y, target)
        return total


class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016), iterating only the images not yet fooled.

    Follows ART's DeepFool step for step: from the predicted class k, move each image onto the
    linearised boundary of the nearest of its ``candidates`` most likely classes,
    r = |f_l − f_k| / (‖∇f_l − ∇f_k‖² + 1e-7)·(∇f_l − ∇f_k), clip to [0, 1], and stop once the
    prediction leaves k; the total perturbation is then scaled by 1 + overshoot. Unlike ART, an
    image leaves the loop when it flips, so later steps cost only the images still to fool, and
    the candidate classes are chosen per image (ART takes their union over the batch), so an
    image's result does not depend on its batch. Untargeted; ``y`` is not used.
    """

    name = "deepfool"
    backend = "reference"
    norm = "l2"
    bounded = False
    parameters = DEEPFOOL_PARAMETERS
    paper = MOOSAVI_2016

    def _run(self, model, x, y, target, num_classes):
        p = self.params
        k = min(p["candidates"], num_classes)
        adv = x.clone()
        active = torch.arange(len(x), device=x.device)
        candidates = original = None
        for _ in range(p["steps"]):
            xa = adv[active].requires_grad_(True)
            logits = model(xa)
            if candidates is None:
                candidates = logits.detach().topk(k, dim=1).indices  # column 0: the predicted class
                original = candidates[:, 0]
            rows = (logits.detach().argmax(1) == original[active]).nonzero().flatten()
            if len(rows) == 0:
                break
            active = active[rows]
            adv[active] = (adv[active] + self._step(xa, logits, rows, candidates[active])).clamp(0.0, 1.0)
        return (x + (1 + p["overshoot"]) * (adv - x)).clamp(0.0, 1.0)

    @staticmethod
    def _step(xa: torch.Tensor, logits: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The DeepFool step of the images ``rows`` of the batch ``xa`` (whose logits are given)."""
        tol = 1e-7  # ART's 10e-8
        f = logits[rows].gather(1, candidates)
        grads = [
            torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j + 1 < candidates.shape[1])[0][rows]
            for j in range(candidates.shape[1])
        ]
        best_value = torch.full((len(rows),), float("inf"), device=xa.device)
        best_w = torch.zeros_like(grads[0])
        best_f = torch.zeros(len(rows), device=xa.device, dtype=f.dtype)
        for j in range(1, candidates.shape[1]):
            w = grads[j] - grads[0]
            f_diff = (f[:, j] - f[:, 0]).detach().abs()
            value = f_diff / (w.flatten(1).norm(dim=1) + tol)
            better = value < best_value
            best_value = torch.where(better, value, best_value)
            best_f = torch.where(better, f_diff, best_f)
            best_w[better] = w[better]
        scale = best_f / (best_w.flatten(1).norm(dim=1) ** 2 + tol)
        return scale.view(-1, *([1] * (xa.ndim - 1))) * best_w
