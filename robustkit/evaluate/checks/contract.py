"""Model-contract checks: the model works and takes the input it is given.

Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...core.checks import check_images, check_labels, inspect_model
from ...core.papers import CARLINI_2019, CARLINI_WAGNER_2017, CROCE_2020
from ..predictions import _outputs, _predict, _rate
from .base import Z_FAIL, Check, _check_n, _share, noise_tolerance

LEARNED_TOLERANCE_Z = 2.0  # "at chance": within 2 binomial standard errors of 1/num_classes
PINNED, PINNED_SHARE = 1e-3, 0.25  # an output within 0.1% of the range from its min or max is pinned; share that fails
INPUT_SCALE_GAIN, INPUT_SCALE_WARN = 0.10, 0.03  # accuracy rescaled input may gain over [0, 1] pixels: fail, warn
LABEL_ORDER_GAIN, LABEL_ORDER_WARN = 0.10, 0.03  # accuracy a permutation of the labels may gain: fail, warn


def model_learned(clean_accuracy: float, num_classes: int, n: int | None = None) -> Check:
    """Clean accuracy well above chance (Carlini et al. 2019, §4: evaluate a model that works).

    Fails at or below chance ``1/num_classes`` plus 2 binomial standard errors on ``n`` points
    (plus 0.01 when ``n`` is not given); warns below twice chance (below halfway from chance
    to 1 when there are fewer than 3 classes).

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    acc = _share("clean_accuracy", clean_accuracy)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an integer ≥ 2")
    chance = 1 / num_classes
    on = "" if n is None else f" on {n} images"
    tolerance = 0.01 if n is None else LEARNED_TOLERANCE_Z * math.sqrt(chance * (1 - chance) / _check_n(n))
    warn_below = min(2 * chance, (1 + chance) / 2)
    values = {
        "clean_accuracy": acc,
        "chance": chance,
        "fail_at_or_below": chance + tolerance,
        "warn_below": warn_below,
        "n": n,
    }
    if acc <= chance + tolerance:
        status, detail = (
            "fail",
            (
                f"clean accuracy {acc:.1%}{on} is at chance ({chance:.1%}): the model learned nothing (or labels or "
                "preprocessing are wrong), so its robustness numbers mean nothing; check the input normalisation "
                "(input_scale) and the labels, then training"
            ),
        )
    elif acc < warn_below:
        status, detail = (
            "warn",
            (
                f"clean accuracy {acc:.1%}{on} is below {warn_below:.1%} (chance {chance:.1%}): the model barely learned; "
                "check that it gets the input normalised as in its training (input_scale), or train it properly, before "
                "trusting robust accuracy, which is bounded by clean accuracy"
            ),
        )
    else:
        status, detail = "pass", f"clean accuracy {acc:.1%}{on} is well above chance ({chance:.1%})"
    return Check("model_learned", status, detail, values, CARLINI_2019)


def output_head(outputs: torch.Tensor) -> Check:
    """The model's outputs must be logits, not probabilities or a squashed or clipped version of them.

    ``outputs``: the model's outputs on a sample (N×K). Fails when they are probabilities (non-negative,
    rows summing to 1) or when more than a quarter of them are pinned at the extremes of their range
    (a sigmoid, tanh, clamp or final ReLU head: its flat parts pass no gradient, so cross-entropy
    attacks overstate robust accuracy and energy or max-logit scores read the squash). Warns on
    log-probabilities (attacks are unaffected, but the energy score is the constant 0). Cost: none,
    the outputs are given.

    Papers: Carlini & Wagner 2017 (attack logits, not probabilities), https://arxiv.org/abs/1608.04644;
    Croce & Hein 2020 (DLR, a loss that does not depend on the scale of the outputs), https://arxiv.org/abs/2003.01690
    """
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or outputs.shape[1] < 2 or len(outputs) == 0:
        raise ValueError("output_head needs the model's outputs as an N×K tensor with K ≥ 2 classes")
    out = outputs.detach().double().cpu()
    lo, hi = float(out.min()), float(out.max())
    sums, lse = out.sum(1), out.logsumexp(1)
    span = max(hi - lo, 1e-12)
    pinned = ((out - lo).abs() <= PINNED * span) | ((hi - out).abs() <= PINNED * span)
    values = {
        "min": lo,
        "max": hi,
        "share_pinned": float(pinned.double().mean()),
        "max_abs_row_sum_minus_1": float((sums - 1).abs().max()),
        "max_abs_logsumexp": float(lse.abs().max()),
        "distinct_values": int(torch.unique(out).numel()),  # 2: decisions only (one-hot, ±1)
        "n": len(out),
    }
    papers = f"{CARLINI_WAGNER_2017}; {CROCE_2020}"
    fix = "return the logits (drop the final layer that squashes them)"
    if lo >= 0 and values["max_abs_row_sum_minus_1"] < 1e-4:
        detail = (
            f"the outputs on {len(out)} images are probabilities (non-negative, each row sums to 1): cross-entropy on "
            f"them misleads gradient attacks and logit-based OOD scores; {fix}"
        )
        return Check("output_head", "fail", detail, values, papers)
    if hi <= 1e-6 and values["max_abs_logsumexp"] < 1e-4:
        detail = (
            f"the outputs on {len(out)} images are log-probabilities (log_softmax): attacks are unaffected, but the "
            f"energy score is the constant 0 and max-logit is log max-softmax; {fix} for OOD detection"
        )
        return Check("output_head", "warn", detail, values, papers)
    # Within [0, 1] or [-1, 1] and reaching the top tenth of it (an untrained model's small logits do not).
    unit = next(((a, b) for a, b in ((0.0, 1.0), (-1.0, 1.0)) if a <= lo and hi <= b and hi >= b - 0.1 * (b - a)), None)
    if unit is not None:
        detail = (
            f"the outputs on {len(out)} images never leave [{unit[0]:g}, {unit[1]:g}] (range [{lo:.3g}, {hi:.3g}]): a "
            "squashed head (sigmoid, tanh) whose flat ends pass little gradient, so cross-entropy attacks overstate "
            f"robust accuracy and energy or max-logit scores read the squash; {fix}, or attack with a margin or DLR loss"
        )
        return Check("output_head", "fail", detail, values, papers)
    if values["share_pinned"] > PINNED_SHARE:
        detail = (
            f"{values['share_pinned']:.0%} of the outputs on {len(out)} images sit at the extremes of their range "
            f"[{lo:.4g}, {hi:.4g}]: a saturating head (sigmoid, tanh, clamp, ReLU) passes no gradient there, so "
            "cross-entropy attacks overstate robust accuracy and energy or max-logit scores read the squash; "
            f"{fix}, or attack with a margin or DLR loss"
        )
        return Check("output_head", "fail", detail, values, papers)
    detail = f"the outputs on {len(out)} images look like logits (range [{lo:.3g}, {hi:.3g}], none saturated)"
    return Check("output_head", "pass", detail, values, papers)


def input_scale(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean_accuracy: float | None = None, batch_size: int = 256
) -> Check:
    """Accuracy on [0, 1] pixels must not be below accuracy on the same images rescaled.

    Classifies the images standardised per channel (with the sample's own mean and std), mapped
    to [-1, 1] (``Normalize(0.5, 0.5)``, common in GAN-era and torchvision recipes) and scaled to
    0..255. When one of them beats the [0, 1] pixels, the model expects input robustkit does not
    give it (its training normalisation is missing) and every number measured on it is wrong.
    Fails when the best gains more than 10 points and beyond `noise_tolerance` at z = 4; warns
    when it gains more than 3 points and beyond z = 2 (a forgotten ``Normalize(0.5, 0.5)`` on a
    digits CNN costs about 12 points: 85% instead of 97%). Fix: put the normalisation in front
    (``robustkit.with_normalization(model, mean, std)``). Cost: three forward passes.

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    check_images(x)
    check_labels(y, len(x), inspect_model(model, x))
    n = len(x)
    flat = x.transpose(0, 1).flatten(1)
    mean, std = flat.mean(1).view(1, -1, 1, 1), flat.std(1).clamp_min(1e-6).view(1, -1, 1, 1)
    raw = clean_accuracy if clean_accuracy is not None else _accuracy(model, x, y, batch_size)
    tried = {
        "standardised": _accuracy(model, (x - mean) / std, y, batch_size),
        "[-1, 1]": _accuracy(model, 2 * x - 1, y, batch_size),
        "0..255": _accuracy(model, x * 255, y, batch_size),
    }
    return judge_input_scale(raw, tried, n)


def judge_input_scale(accuracy: float, rescaled: dict[str, float], n: int) -> Check:
    """`input_scale`'s verdict on the numbers: ``accuracy`` on [0, 1] pixels against each rescaled
    input's (``{"standardised": ..., ...}``), all on the same ``n`` images."""
    raw = _share("accuracy", accuracy)
    tried = {k: _share(f"accuracy {k}", v) for k, v in rescaled.items()}
    best = max(tried, key=lambda k: tried[k])
    gain = tried[best] - raw
    tol, tol_fail = noise_tolerance(raw, tried[best], n), noise_tolerance(raw, tried[best], n, Z_FAIL)
    values = {"accuracy": raw, **{f"accuracy_{k}": v for k, v in tried.items()}, "n": n}
    values.update(best=best, gain=gain, tolerance=tol, fail_tolerance=tol_fail)
    others = ", ".join(f"{k} {v:.1%}" for k, v in tried.items())
    fix = "put that normalisation inside the model (robustkit.with_normalization(model, mean, std))"
    fails = gain > max(INPUT_SCALE_GAIN, tol_fail)
    if fails or gain > max(INPUT_SCALE_WARN, tol):
        meaning = (
            "it expects the input normalised as in its training, so every number measured here is wrong"
            if fails
            else f"beyond sampling noise (±{tol:.1%}), so it likely expects its training normalisation and the "
            "numbers measured here are wrong"
        )
        detail = (
            f"the model classifies {tried[best]:.1%} of {n} images given {best} input but {raw:.1%} given [0, 1] "
            f"pixels: {meaning}; {fix}"
        )
        return Check("input_scale", "fail" if fails else "warn", detail, values, CARLINI_2019)
    if gain > 0:
        detail = (
            f"[0, 1] pixels give {raw:.1%} accuracy on {n} images; {best} input gives {tried[best]:.1%}, within "
            f"sampling noise (±{tol:.1%}) of it ({others})"
        )
    else:
        detail = f"[0, 1] pixels give {raw:.1%} accuracy on {n} images, rescaled input no more ({others})"
    return Check("input_scale", "pass", detail, values, CARLINI_2019)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    return _rate(_predict(model, x, batch_size) == y.cpu())


def label_order(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int = 0) -> Check:
    """The labels must be in the model's class order: no permutation of the classes may explain its
    predictions much better than the identity.

    A data set whose classes are numbered otherwise than the model's (an ImageFolder sorted by name,
    another data set's class list, a relabelled subset) lowers clean and robust accuracy with no other
    sign. The permutation that best matches labels to predictions (an assignment on the confusion
    matrix, Hungarian method) is fitted on one half of the sample and scored on the other, both ways,
    so that chance matches on few images per class do not count; the identity wins ties. Fails when
    the permuted labels score more than 10 points above the labels as given and beyond
    `noise_tolerance` at z = 4, warns above 3 points and z = 2, and names the classes that move.
    Cost: none (the predictions on the sample are given).

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness (§3: check the evaluation's
    inputs), https://arxiv.org/abs/1902.06705
    """
    from scipy.optimize import linear_sum_assignment

    pred, true = predictions.detach().cpu().long(), labels.detach().cpu().long()
    if pred.shape != true.shape or pred.ndim != 1 or len(pred) == 0:
        raise ValueError("label_order needs one prediction per label, as two 1-D tensors of the same length")
    n = len(true)

    def best_mapping(rows: torch.Tensor) -> torch.Tensor:
        """label → class of the best assignment on ``rows``; labels with no evidence keep their own class."""
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        confusion.index_put_((true[rows], pred[rows]), torch.ones(len(rows), dtype=torch.float64), accumulate=True)
        confusion += 1e-3 * torch.eye(num_classes, dtype=torch.float64)  # the identity wins ties
        _, cols = linear_sum_assignment(confusion.numpy(), maximize=True)
        return torch.as_tensor(cols, dtype=torch.long)

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    halves = (order[: n // 2], order[n // 2 :])
    permuted_hits = sum(int((pred[b] == best_mapping(a)[true[b]]).sum()) for a, b in (halves, halves[::-1]))
    identity, permuted = float((pred == true).double().mean()), permuted_hits / n
    mapping = best_mapping(torch.arange(n))
    moved = [(i, int(mapping[i])) for i in range(num_classes) if int(mapping[i]) != i]
    gain = permuted - identity
    tol, tol_fail = noise_tolerance(identity, permuted, n), noise_tolerance(identity, permuted, n, Z_FAIL)
    values = {
        "accuracy": identity,
        "accuracy_permuted": permuted,
        "gain": gain,
        "tolerance": tol,
        "fail_tolerance": tol_fail,
        "moved": moved,
        "n": n,
    }
    fails = gain > max(LABEL_ORDER_GAIN, tol_fail)
    if fails or gain > max(LABEL_ORDER_WARN, tol):
        pairs = ", ".join(f"label {i} → class {j}" for i, j in moved[:6]) + (" …" if len(moved) > 6 else "")
        detail = (
            f"relabelled by a permutation of the classes ({pairs}), the predictions on {n} images are {permuted:.1%} "
            f"right (on held-out halves) against {identity:.1%} as labelled"
            + ("" if fails else f", beyond sampling noise (±{tol:.1%})")
            + ": the labels are numbered in another class order than the model's (e.g. an ImageFolder sorted by "
            "name, another data set's class list), so clean and robust accuracy are wrong; map the labels to the "
            "model's classes"
        )
        return Check("label_order", "fail" if fails else "warn", detail, values, CARLINI_2019)
    detail = (
        f"no permutation of the classes explains the predictions on {n} images better than the labels as given "
        f"({permuted:.1%} on held-out halves against {identity:.1%})"
    )
    return Check("label_order", "pass", detail, values, CARLINI_2019)


CONTRACT = ("model_learned", "output_head", "input_scale", "label_order")
"""The model-contract checks, which every entry point runs (`contract_checks`)."""


def contract_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0, batch_size: int = 256) -> list[Check]:
    """The model's contract on a labelled sample: `model_learned`, `output_head`, `input_scale` and
    `label_order`, in that order. Every entry point that measures a model runs them (attacks,
    certification, corruptions, OOD), so a model fed the wrong input, returning probabilities or
    judged against labels in another order is caught wherever its numbers are reported.
    Cost: four forward passes of the sample.

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    check_images(x)
    num_classes = inspect_model(model, x)
    check_labels(y, len(x), num_classes)
    outputs = _outputs(model, x, batch_size)
    predictions = outputs.argmax(1)
    clean = _rate(predictions == y.cpu())
    return [
        model_learned(clean, num_classes, len(x)),
        output_head(outputs),
        input_scale(model, x, y, clean_accuracy=clean, batch_size=batch_size),
        label_order(predictions, y, num_classes, seed=seed),
    ]
