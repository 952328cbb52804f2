"""robustkit's own FGSM (untargeted and targeted), used to cross-check the backends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import preserved_state
from ..core.papers import GOODFELLOW_2015
from .base import Attack, eps_param


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
