"""Gradient-masking checks: the gradients an attack follows exist, are stable and lead somewhere.

Athalye, Carlini & Wagner 2018 (obfuscated gradients: shattered, stochastic, vanishing),
Carlini & Wagner 2016 (distillation's saturated softmax) and Pintor et al. 2022.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import (
    check_images,
    check_labels,
    gradient_reaches_input,
    inspect_model,
    model_device,
    preserved_state,
)
from ...core.papers import ANDRIUSHCHENKO_2020, ATHALYE_2018, CARLINI_WAGNER_2016, CROCE_2022, PINTOR_2022, TRAMER_2020
from ...modelling.batches import map_batches, slices
from ..predictions import _rate
from .base import Check, _not_above

GRADIENT_WARN, GRADIENT_FAIL = 0.01, 0.10  # share of points with a zero / NaN / inf input gradient
CONSISTENCY_STEP = 1e-3  # the sign step whose effect the gradient must predict
CONSISTENCY_ERROR = 0.5  # relative error above which an image's gradient mispredicts the change
CONSISTENCY_WARN, CONSISTENCY_FAIL = 0.30, 0.50  # median relative error of the first-order prediction
GRADIENT_FREE_WARN, GRADIENT_FREE_FAIL = 0.10, 0.25  # share of the gradient attack's survivors Square breaks
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
    cut = False  # the forward pass is cut off from autograd: no gradient at all
    with preserved_state(model):
        model.eval()
        for s in slices(len(x), batch_size):
            xb = x[s].detach().to(device).requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[s].to(device), reduction="sum")  # per-point gradients
            grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
            cut |= grad is None
            grad = (torch.zeros_like(xb) if grad is None else grad).flatten(1)
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
        "cut_from_autograd": cut,
        "n": len(x),
    }
    papers = f"{CARLINI_WAGNER_2016}; {ATHALYE_2018}; {PINTOR_2022}"
    if cut:
        detail = (
            "no gradient reaches the input: the forward pass is cut off from autograd (rounding or thresholding the "
            "pixels, .detach(), torch.no_grad() or numpy inside forward), so gradient attacks cannot run; attack with "
            "BPDA (a differentiable stand-in for that step in the backward pass) or a gradient-free attack (square, "
            "hop_skip_jump)"
        )
        return Check("gradients_available", "fail", detail, values, papers)
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


def adaptive_vs_oblivious(adaptive_accuracy: float, oblivious_accuracy: float, n: int, method: str = "") -> Check:
    """An adaptive attack on the whole defense must not be weaker than an oblivious one.

    The oblivious attack is crafted on the undefended model and tested on the defended one;
    the adaptive attack (through the defense, with BPDA or EOT where it is not differentiable
    or random) sees strictly more. Leaving more accuracy beyond `noise_tolerance` (z = 2:
    warn, z = 4: fail) means the defense masks the adaptive attack's gradients. ``method``
    says how the adaptive attack already gets through the defense (e.g. "BPDA"), so the advice
    does not repeat it.

    Paper: Athalye, Carlini & Wagner 2018, Obfuscated Gradients Give a False Sense of Security, https://arxiv.org/abs/1802.00420
    """
    if method:
        advice = (
            f"the adaptive attack, already through the defense with {method}, leaves {{worse:.1%}} accuracy on {{n}} "
            "images, more than the oblivious one crafted on the undefended model ({better:.1%}, noise ±{tol:.1%}): "
            f"its {method} gradient is a poor approximation of the defense here; report the lower number, and "
            "strengthen the adaptive attack (more steps, a closer differentiable approximation, EOT for randomness)"
        )
    else:
        advice = (
            "the adaptive attack leaves {worse:.1%} accuracy on {n} images, more than the oblivious one crafted on the "
            "undefended model ({better:.1%}, noise ±{tol:.1%}): the defense masks gradients; attack through it with "
            "BPDA (non-differentiable steps) or EOT (randomness) and report the lower number"
        )
    return _not_above(
        "adaptive_vs_oblivious", adaptive_accuracy, oblivious_accuracy, n, ("adaptive_accuracy", "oblivious_accuracy"),
        advice,
        "the adaptive attack ({worse:.1%}) is at least as strong as the oblivious one ({better:.1%}) on {n} images",
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
            "points): the model is randomised, so one gradient is a noisy sample and one prediction a draw; attack it "
            "with EOT (eot_pgd: gradients averaged over draws; AutoAttack version='rand', not the standard version, "
            "which is weaker than PGD here) and report accuracy over several draws"
        )
        return Check("unstable_predictions", "warn", detail, values, papers)
    return Check(
        "unstable_predictions",
        "pass",
        "repeated calls give the same outputs: the model is deterministic",
        values,
        papers,
    )


def gradient_consistency(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    step: float = CONSISTENCY_STEP,
    seed: int = 0,
    batch_size: int = 256,
) -> Check:
    """The input gradient must predict how the model's margin changes under a tiny step.

    For each image, the margin m = z_y − z_j (j: the runner-up class at x) is compared after a random
    ±``step`` sign step (default 1e-3, a quarter of a grey level) with its first-order prediction
    ∇m·δ. For a differentiable model the two agree closely: the median relative error is 0.3% for a
    digits CNN and 10% for the CIFAR-10 prefix's CNN6 (a ReLU net crosses kinks even at this scale).
    A gradient that exists but leads nowhere does not: a high-frequency transform (x + 0.02·sin(2000x):
    76% on the CIFAR prefix), noise drawn afresh or from the input itself (same input, same output;
    any change, new noise: 100%), a step the gradient does not see. A median relative error above
    30% warns, above 50% fails: gradient attacks are then blind and robust accuracy overstated. The
    share of images above 50% is reported too. A deliberate surrogate
    gradient (BPDA's identity through a rounding step) trips it too: `diagnose` skips models with a
    module whose ``surrogate_gradient`` is True (robustkit's PreprocessedModel with straight_through).
    Cost: two forward passes and one backward.

    Papers: Athalye, Carlini & Wagner 2018 (shattered and stochastic gradients), https://arxiv.org/abs/1802.00420;
    Tramer et al. 2020, On Adaptive Attacks to Adversarial Example Defenses, https://arxiv.org/abs/2002.08347
    """
    check_images(x)
    num_classes = inspect_model(model, x)
    check_labels(y, len(x), num_classes)
    if not (isinstance(step, float) and 0 < step < 0.1):
        raise ValueError(f"step={step!r} must be a small positive float (default 1e-3)")
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    errors = []
    papers = f"{ATHALYE_2018}; {TRAMER_2020}"
    with preserved_state(model):
        model.eval()
        if not gradient_reaches_input(model, x):
            detail = (
                f"no gradient reaches the input on {len(x)} images: the forward pass is cut off from autograd (rounding "
                "or thresholding the pixels, .detach(), torch.no_grad() or numpy inside forward), so gradient attacks "
                "cannot run and any number they give is wrong; attack with BPDA (a differentiable stand-in for that "
                "step in the backward pass) or a gradient-free attack (square, hop_skip_jump)"
            )
            values = {"share_inconsistent": 1.0, "median_relative_error": float("nan"), "step": step, "n": len(x)}
            return Check("gradient_consistency", "fail", detail, {**values, "gradient": "none"}, papers)
        for s in slices(len(x), batch_size):
            xb, yb = x[s].detach().to(device), y[s].to(device)
            sign = (torch.randint(0, 2, xb.shape, generator=generator) * 2 - 1).to(xb)
            moved = (xb + step * sign).clamp(0, 1)
            xr = xb.clone().requires_grad_(True)
            logits = model(xr)
            runner_up = logits.detach().scatter(1, yb[:, None], -float("inf")).argmax(1)
            (grad,) = torch.autograd.grad(_margin(logits, yb, runner_up).sum(), xr)
            with torch.no_grad():
                actual = _margin(model(moved), yb, runner_up) - _margin(model(xb), yb, runner_up)
            predicted = ((moved - xb) * grad).flatten(1).sum(1)
            scale = torch.maximum(actual.abs(), predicted.abs()).clamp_min(1e-12)
            errors.append(((actual - predicted).abs() / scale).double().cpu())
    error = torch.cat(errors)
    share = _rate(error > CONSISTENCY_ERROR)
    values = {"share_inconsistent": share, "median_relative_error": float(error.median()), "step": step, "n": len(x)}
    median = values["median_relative_error"]
    if median > CONSISTENCY_WARN:
        detail = (
            f"on {share:.0%} of {len(x)} images the input gradient mispredicts how the output changes under a "
            f"±{step:g} step (median relative error {values['median_relative_error']:.0%}): the gradient exists but "
            "leads nowhere (a high-frequency transform, or randomness drawn afresh or from the input itself), so "
            "gradient attacks are blind and robust accuracy is overstated; attack with BPDA through the transform, "
            "EOT (eot_pgd; AutoAttack version='rand') for randomness, and a gradient-free attack (square)"
        )
        return Check("gradient_consistency", "fail" if median > CONSISTENCY_FAIL else "warn", detail, values, papers)
    detail = (
        f"the input gradient predicts the output's change under a ±{step:g} step on {len(x)} images (median "
        f"relative error {median:.1%}, within {CONSISTENCY_WARN:.0%})"
    )
    return Check("gradient_consistency", "pass", detail, values, papers)


def _margin(logits: torch.Tensor, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, y[:, None])[:, 0] - logits.gather(1, other[:, None])[:, 0]


def gradient_free(broken: int, tried: int, survivors: int, n: int, attack_name: str = "square") -> Check:
    """A gradient-free attack must not break many of the images a gradient attack left standing.

    Of the ``survivors`` (images still classified correctly after the gradient attack, out of
    ``n``), ``tried`` were attacked with a score-based random search (Square, Andriushchenko et al.
    2020) at the same budget and ``broken`` fell. Random search does not read gradients; when a
    short one beats a gradient attack, the gradients are masked (Athalye et al. 2018; Carlini et
    al. 2019: gradient-free attacks should not succeed where gradient-based ones fail). More than
    10% of the tried images (and at least 3) warns, more than 25% (and at least 5) fails. A
    healthy digits CNN: 1 of 128 survivors at 1000 queries.

    Papers: Andriushchenko et al. 2020, https://arxiv.org/abs/1912.00049; Athalye, Carlini & Wagner 2018, https://arxiv.org/abs/1802.00420
    """
    counts = (broken, tried, survivors, n)
    if not (all(isinstance(c, int) for c in counts) and 0 <= broken <= tried <= survivors <= n):
        raise ValueError(f"need integers 0 ≤ broken ≤ tried ≤ survivors ≤ n, got {counts}")
    share = broken / tried if tried else 0.0
    values = {"broken": broken, "tried": tried, "survivors": survivors, "n": n, "share": share, "attack": attack_name}
    papers = f"{ANDRIUSHCHENKO_2020}; {ATHALYE_2018}"
    of = (
        f"the {tried} it tried among the {survivors} images (of {n})"
        if tried < survivors
        else f"the {survivors} images (of {n})"
    )
    if share > GRADIENT_FREE_WARN and broken >= 3:
        detail = (
            f"the gradient-free {attack_name} breaks {broken} of {of} the gradient attack left standing ({share:.0%}): "
            "the gradients are masked, so the gradient attack's number is overstated; report the accuracy under "
            "both, and attack with BPDA/EOT or a margin loss"
        )
        status = "fail" if share > GRADIENT_FREE_FAIL and broken >= 5 else "warn"
        return Check("gradient_free", status, detail, values, papers)
    detail = f"the gradient-free {attack_name} breaks {broken} of {of} the gradient attack left standing"
    return Check("gradient_free", "pass", detail, values, papers)


def forward_optimisation(model: nn.Module, x: torch.Tensor, images: int = 8) -> Check:
    """The forward pass must not compute gradients itself (a test-time optimisation or purification defense).

    Runs the model on ``images`` images (eval mode, as an attack calls it) and counts the calls of
    ``torch.autograd.grad`` and ``torch.autograd.backward`` (``Tensor.backward``, optimisers' steps and
    ``torch.func`` transforms go through them) made inside it. A model that optimises its input or its
    own state at test time (a purifier, an energy-based refinement, test-time training) hands attacks the
    gradient of an unrolled or detached optimisation, which is masked or misleading, so gradient attacks
    overstate robust accuracy (Croce et al. 2022 broke most such defenses with adaptive attacks: BPDA
    through the optimisation, EOT over its randomness, and many more steps). Warns on any such call;
    the official AutoAttack's ``dynamic`` flag looks for the same. Cost: one forward pass of ``images``.

    Papers: Croce et al. 2022, https://arxiv.org/abs/2202.13711; Athalye, Carlini & Wagner 2018, https://arxiv.org/abs/1802.00420
    """
    check_images(x)
    inspect_model(model, x)
    watched = {torch.autograd.grad.__code__: "torch.autograd.grad", torch.autograd.backward.__code__: "backward"}
    calls: Counter[str] = Counter()

    def profile(frame: Any, event: str, _: Any) -> None:
        if event == "call" and frame.f_code in watched:
            calls[watched[frame.f_code]] += 1

    previous = sys.getprofile()
    with preserved_state(model):
        model.eval()
        sys.setprofile(profile)
        try:
            model(x[:images].detach().to(model_device(model)))
        finally:
            sys.setprofile(previous)
    values = {"calls": dict(calls), "images": min(images, len(x))}
    papers = f"{CROCE_2022}; {ATHALYE_2018}"
    if calls:
        listed = ", ".join(f"{name} ×{count}" for name, count in calls.items())
        detail = (
            f"the model computes gradients inside its forward pass ({listed} for one call on {values['images']} "
            "images): a test-time optimisation or purification defense, whose gradient is that of an unrolled or "
            "detached optimisation, so gradient attacks overstate robust accuracy; attack it adaptively: BPDA "
            "through the optimisation (e.g. the identity), EOT over its randomness, many more steps (Croce et al. "
            "2022), and report the lowest number"
        )
        return Check("forward_optimisation", "warn", detail, values, papers)
    detail = "the forward pass computes no gradients of its own: no test-time optimisation to see through"
    return Check("forward_optimisation", "pass", detail, values, papers)
