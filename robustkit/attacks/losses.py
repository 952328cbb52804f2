"""The losses a gradient attack ascends: cross-entropy, the logit margin (Carlini & Wagner 2017)
and the difference of logits ratio, DLR (Croce & Hein 2020).

Each is written so that ascending it helps the attacker, per image, and summed over the batch:
an image's gradient never depends on the other images of its batch. The margin and DLR use
logit differences only, so they keep their gradient where a saturated output (a final sigmoid
or softmax, a large temperature) flattens the cross-entropy's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.params import Param

LOSSES = ("ce", "margin", "dlr")
LOSS = Param(
    "loss",
    "ce",
    "loss ascended: ce (cross-entropy), margin (best other logit − true logit, Carlini & Wagner 2017), "
    "dlr (that margin over z_π1 − z_π3, Croce & Hein 2020; targeted: needs ≥ 4 classes and aims to "
    "misclassify, as in APGD-T, not to reach the target)",
    types=(str,),
    choices=LOSSES,
)


def check_loss(owner: str, loss: str, num_classes: int, targeted: bool) -> None:
    """Refuse a loss the model's number of classes cannot define (DLR reads the 3rd or 4th largest logit)."""
    if loss != "dlr":
        return
    need = 4 if targeted else 3
    if num_classes < need:
        mode = "targeted" if targeted else "untargeted"
        nth = "4th" if targeted else "3rd"
        raise ValueError(
            f"{owner}: the {mode} DLR loss (Croce & Hein 2020) reads the {nth} largest logit, so it needs "
            f"at least {need} classes; the model has {num_classes}. Use loss='margin' (or 'ce')"
        )


def _other_max(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max_{j ≠ label} z_j per row."""
    mask = F.one_hot(labels, logits.shape[1]).bool()
    return logits.masked_fill(mask, float("-inf")).amax(dim=1)


def _at(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, labels.view(-1, 1)).squeeze(1)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image margin to ascend: max_{j≠y} z_j − z_y, or targeted z_t − max_{j≠t} z_j (Carlini & Wagner 2017).

    Positive once the image is misclassified (untargeted) or classified as the target.
    """
    if target is None:
        return _other_max(logits, y) - _at(logits, y)
    return _at(logits, target) - _other_max(logits, target)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image difference of logits ratio to ascend (Croce & Hein 2020).

    Untargeted: −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12); targeted:
    −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12), where z_π1 ≥ z_π2 ≥ ... are the sorted
    logits. Invariant to shifting and (positively) scaling the logits. The targeted form raises
    z_t above z_y, not above every class: AutoAttack's APGD-T uses it to misclassify (on digits,
    targeted PGD-20 at eps 0.3 misclassified 91% of images but reached the target for 36%, where
    the margin reached it for 87%). To reach a target, use the margin or the cross-entropy.
    """
    top = logits.sort(dim=1, descending=True).values
    if target is None:
        return (_other_max(logits, y) - _at(logits, y)) / (top[:, 0] - top[:, 2] + 1e-12)
    return (_at(logits, target) - _at(logits, y)) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def attack_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """The batch's loss to ascend (a scalar, summed over images).

    ``"ce"``: the cross-entropy at ``y``, or minus it at ``target``, as robustkit's PGD has always
    computed it (bit for bit); ``"margin"`` and ``"dlr"``: `margin_loss`, `dlr_loss`.
    """
    if loss == "ce":
        labels, sign = (y, 1.0) if target is None else (target, -1.0)
        return sign * F.cross_entropy(logits, labels, reduction="sum")
    if loss == "margin":
        return margin_loss(logits, y, target).sum()
    if loss == "dlr":
        return dlr_loss(logits, y, target).sum()
    raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
