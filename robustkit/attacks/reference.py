"""robustkit's own FGSM (untargeted and targeted), used to cross-check the backends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Attack


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


def gradient_sign(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """The FGSM step direction (see `gradient_sign_and_logits`)."""
    return gradient_sign_and_logits(model, x, y, target)[0]


class FGSM(Attack):
    """Fast gradient sign method: x' = clip(x ± eps·sign ∇ₓL, 0, 1)."""

    name = "fgsm"
    backend = "reference"
    norm = "linf"
    targeted = True
    single_step = True
    defaults = {"eps": 8 / 255}

    def direction(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The step direction, computed once and reusable for every eps (sweeps, budgets)."""
        return gradient_sign(model, x, y, target)

    def _run(self, model, x, y, target):
        return (x + self.params["eps"] * gradient_sign(model, x, y, target)).clamp(0.0, 1.0)
