"""Gradient-masking checks: the gradients an attack follows exist, are stable and lead somewhere.

Athalye, Carlini & Wagner 2018 (obfuscated gradients: shattered, stochastic, vanishing),
Carlini & Wagner 2016 (distillation's saturated softmax) and Pintor et al. 2022.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_images, check_labels, inspect_model, model_device, preserved_state
from ...core.papers import ATHALYE_2018, CARLINI_WAGNER_2016, PINTOR_2022
from ...modelling.batches import map_batches, slices
from ..robustness import _rate
from .base import Check, _not_above

GRADIENT_WARN, GRADIENT_FAIL = 0.01, 0.10  # share of points with a zero / NaN / inf input gradient
RANDOMISED = 1e-4  # relative change of the logits between two identical calls


def gradients_available(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> Check:
    """Share of points whose cross-entropy input gradient is exactly 0, or NaN, or inf.

    Such points cannot be moved by a gradient attack, which then reports them as robust: a
    rounding or quantising input layer (shattered gradients, Athalye et al. 2018), or a
    saturated softmax whose float32 gradient underflows to 0, as in defensive distillation
    used at temperature 1 (Carlini & Wagner 2016; on digits a distilled model had 57% of
    points with exactly zero gradient). Pintor et al.'s "unavailable gradients" indicator.
    Warns above 1% of the points, fails above 10%. Cost: one forward and one backward pass.

    Papers: Carlini & Wagner 2016, https://arxiv.org/abs/1607.04311; Athalye, Carlini & Wagner
    2018, https://arxiv.org/abs/1802.00420; Pintor et al. 2022, https://arxiv.org/abs/2106.09947
    """
    check_images(x)
    check_labels(y, len(x), inspect_model(model, x))
    device = model_device(model)
    zero, bad, norms = [], [], []
    with preserved_state(model):
        model.eval()
        for s in slices(len(x), batch_size):
            xb = x[s].detach().to(device).requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[s].to(device), reduction="sum")  # per-point gradients
            grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
            grad = (torch.zeros_like(xb) if grad is None else grad).flatten(1)  # None: a cut graph, no gradient
            zero.append((grad == 0).all(1).cpu())
            bad.append((~torch.isfinite(grad)).any(1).cpu())
            norms.append(grad.double().norm(dim=1).cpu())
    zero_t, bad_t, norm_t = torch.cat(zero), torch.cat(bad), torch.cat(norms)
    share_zero, share_nonfinite = _rate(zero_t), _rate(bad_t)
    share = _rate(zero_t | bad_t)
    finite = norm_t[torch.isfinite(norm_t)]
    values = {
        "share": share,
        "share_zero": share_zero,
        "share_nonfinite": share_nonfinite,
        "median_norm": float(finite.median()) if len(finite) else float("nan"),
        "n": len(x),
    }
    papers = f"{CARLINI_WAGNER_2016}; {ATHALYE_2018}; {PINTOR_2022}"
    if share > GRADIENT_WARN:
        status = "fail" if share > GRADIENT_FAIL else "warn"
        detail = (
            f"{share:.1%} of points have a zero ({share_zero:.1%}) or NaN/inf ({share_nonfinite:.1%}) input gradient "
            "(a rounding or quantising layer, or a saturated softmax as in distillation): gradient attacks cannot move "
            "them, so robust accuracy is overstated; attack with BPDA, a margin loss on logits (a distilled model: "
            "through TemperatureScaled), or a gradient-free attack"
        )
        return Check("gradients_available", status, detail, values, papers)
    detail = f"{share:.1%} of points have a zero or non-finite input gradient: gradient attacks have a direction"
    return Check("gradients_available", "pass", detail, values, papers)


def adaptive_vs_oblivious(adaptive_accuracy: float, oblivious_accuracy: float, n: int) -> Check:
    """An adaptive attack on the whole defense must not be weaker than an oblivious one.

    The oblivious attack is crafted on the undefended model and tested on the defended one;
    the adaptive attack (through the defense, with BPDA or EOT where it is not differentiable
    or random) sees strictly more. Leaving more accuracy beyond `noise_tolerance` (z = 2:
    warn, z = 4: fail) means the defense masks the adaptive attack's gradients.

    Paper: Athalye, Carlini & Wagner 2018, Obfuscated Gradients Give a False Sense of Security, https://arxiv.org/abs/1802.00420
    """
    return _not_above(
        "adaptive_vs_oblivious", adaptive_accuracy, oblivious_accuracy, n, ("adaptive_accuracy", "oblivious_accuracy"),
        "the adaptive attack leaves {worse:.1%} accuracy, more than the oblivious one crafted on the undefended model "
        "({better:.1%}, noise ±{tol:.1%}): the defense masks gradients; attack through it with BPDA (non-differentiable "
        "steps) or EOT (randomness) and report the lower number",
        "the adaptive attack ({worse:.1%}) is at least as strong as the oblivious one ({better:.1%})",
        ATHALYE_2018,
    )  # fmt: skip


def unstable_predictions(model: nn.Module, x: torch.Tensor, repeats: int = 2, batch_size: int = 512) -> Check:
    """A randomised model (fresh noise at every call) gives different outputs for the same input.

    Calls the model ``repeats`` times (eval mode) and warns when the logits change by more than
    1e-4 of their scale (floating-point nondeterminism stays far below): a single gradient of a
    randomised model is a noisy sample, so attack it with EOT (average gradients over many
    draws) and report accuracy over several draws. Related to Pintor et al.'s "unstable
    predictions". Cost: ``repeats`` forward passes.

    Papers: Athalye, Carlini & Wagner 2018 (EOT), https://arxiv.org/abs/1802.00420; Pintor et al. 2022, https://arxiv.org/abs/2106.09947
    """
    check_images(x)
    inspect_model(model, x)
    if not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats={repeats!r} must be an integer ≥ 2")
    with preserved_state(model), torch.no_grad():
        model.eval()
        outs = [map_batches(model, x, batch_size, model_device(model)).double() for _ in range(repeats)]
    scale = max(float(outs[0].abs().max()), 1e-12)
    change = max(float((o - outs[0]).abs().max()) for o in outs[1:])
    preds = [o.argmax(1) for o in outs]
    changed = torch.zeros(len(x), dtype=torch.bool)
    for p in preds[1:]:
        changed |= p != preds[0]
    values = {
        "relative_change": change / scale,
        "max_logit_change": change,
        "share_changed": _rate(changed),
        "repeats": repeats,
    }
    papers = f"{ATHALYE_2018}; {PINTOR_2022}"
    if change / scale > RANDOMISED:
        detail = (
            f"repeated calls on the same inputs give different logits (predictions changed on {_rate(changed):.1%} of "
            "points): the model is randomised; attack it with EOT (gradients averaged over draws) and report accuracy "
            "over several draws"
        )
        return Check("unstable_predictions", "warn", detail, values, papers)
    return Check(
        "unstable_predictions",
        "pass",
        "repeated calls give the same outputs: the model is deterministic",
        values,
        papers,
    )
