"""Checks on OOD scores: the ranking is better than a coin and not decided by ties.

Papers: Hein, Andriushchenko & Bitterwolf 2019; Hendrycks et al. 2022.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...core.papers import CARLINI_2019, HEIN_2019, HENDRYCKS_2022, YANG_2022
from .base import Check, _check_n, _share

SATURATED = 0.10  # share of OOD scores tied with another score
OVERLAP_WARN, OVERLAP_FAIL = 0.01, 0.10  # share of the scored ID images that the detector was fitted on
RANGE_RATIO = 4.0  # how many times brighter one set's typical brightest pixel may be than another's


def ood_auroc(metrics: Any, n_id: int | None = None, n_ood: int | None = None) -> Check:
    """OOD AUROC at or below chance warns: the score does not rank OOD images above ID ones.

    Takes an AUROC, an `ood_metrics` dict or an `OODResult` (which knows its image counts; else
    pass ``n_id`` and ``n_ood``). With the counts, "at chance" is within 2 standard errors of
    0.5 under no separation, sqrt((n_id + n_ood + 1) / (12·n_id·n_ood)) (the Mann–Whitney null);
    without them, exactly 0.5. At chance, the score does not separate the sets (a constant score,
    such as the energy of log-probabilities, gives exactly 0.5). Below it, the ranking is reversed:
    a sign flip (scores must be higher for OOD), or a model more confident on these OOD images
    than on its own test images, as ReLU networks can be far from their training data.

    Papers: Hein, Andriushchenko & Bitterwolf 2019, https://arxiv.org/abs/1812.05720; Mann & Whitney 1947
    """
    if hasattr(metrics, "id_scores"):  # an OODResult
        n_id, n_ood, metrics = len(metrics.id_scores), len(metrics.ood_scores), metrics.metrics
    auroc = _share("AUROC", metrics["AUROC"] if isinstance(metrics, dict) else metrics)
    counted = n_id is not None and n_ood is not None
    if counted:
        n_id, n_ood = _check_n(n_id), _check_n(n_ood)
        tolerance = 2 * math.sqrt((n_id + n_ood + 1) / (12 * n_id * n_ood))
    else:
        tolerance = 0.0
    values = {"AUROC": auroc, "chance_tolerance": tolerance, "n_id": n_id, "n_ood": n_ood}
    on = f" on {n_id} ID and {n_ood} OOD images" if counted else ""
    if auroc < 0.5 - tolerance:
        detail = (
            f"AUROC {auroc:.3f}{on} is below chance: the score ranks ID as more anomalous than OOD: a sign flip "
            "(higher scores must mean more OOD), or a model more confident on these OOD images than on its own test "
            "images, as ReLU networks can be far from their data (noise images often do this); check the sign, then "
            "the score histograms, and compare training seeds"
        )
        return Check("ood_auroc", "warn", detail, values, HEIN_2019)
    if auroc <= 0.5 + tolerance:
        noise = f" (within ±{tolerance:.3f}, two standard errors)" if counted else ""
        detail = (
            f"AUROC {auroc:.3f}{on} is at chance{noise}: the score does not separate ID from OOD (a constant score, "
            "e.g. the energy of log-probabilities, gives exactly 0.5); try another score or check the model's outputs"
        )
        return Check("ood_auroc", "warn", detail, values, HEIN_2019)
    return Check(
        "ood_auroc",
        "pass",
        f"AUROC {auroc:.3f}{on} is above chance" + (f" by more than {tolerance:.3f}" if counted else ""),
        values,
        HEIN_2019,
    )


def ood_saturated(
    id_scores: Sequence[float] | np.ndarray, ood_scores: Sequence[float] | np.ndarray, threshold: float = SATURATED
) -> Check:
    """Tied OOD scores: more than ``threshold`` (default 10%) of all scores equal to another score warns.

    A saturated score (softmax at exactly 1.0 for confident images) cannot rank the tied images,
    so AUROC and FPR@95 depend on how ties are broken. Continuous scores almost never tie.

    Paper: Hendrycks et al. 2022 (max logit instead of a saturating max softmax), https://arxiv.org/abs/1911.11132
    """
    id_s, ood_s = np.asarray(id_scores, dtype=np.float64).ravel(), np.asarray(ood_scores, dtype=np.float64).ravel()
    scores = np.concatenate([id_s, ood_s])
    if len(id_s) == 0 or len(ood_s) == 0:
        raise ValueError("ood_saturated needs at least one ID and one OOD score")
    values_, counts = np.unique(scores, return_counts=True)
    tied = float(counts[counts > 1].sum() / len(scores))
    top = int(counts.argmax())
    mode_value, mode_share = float(values_[top]), float(counts[top] / len(scores))
    values = {
        "tied_share": tied,
        "mode_value": mode_value,
        "mode_share": mode_share,
        "id_at_mode": float(np.mean(id_s == mode_value)),
        "ood_at_mode": float(np.mean(ood_s == mode_value)),
        "threshold": threshold,
    }
    if tied > threshold:
        detail = (
            f"{tied:.0%} of the scores tie ({mode_share:.0%} equal {mode_value:.6g}): the score is saturated (e.g. "
            "softmax at 1.0), so ties decide the ranking; use max_logit or energy, or a temperature"
        )
        return Check("ood_saturated", "warn", detail, values, HENDRYCKS_2022)
    return Check(
        "ood_saturated", "pass", f"{tied:.1%} of the scores tie (within {threshold:.0%})", values, HENDRYCKS_2022
    )


def fit_overlap(found: int, tried: int, remembered: int, fit_images: int, detector: str = "") -> Check:
    """The ID test images must not be the images the detector was fitted on.

    A detector fitted on ID training data (Mahalanobis, ViM, KNN, ...) scores its own fit images as more
    in-distribution than unseen ones, so fitting on the ID test set inflates AUROC (on digits, Mahalanobis
    0.727 against 0.567 fitted on the training images) with no other sign. Of ``tried`` scored ID images
    (a sample), ``found`` are pixel-for-pixel (on the 0..255 grid) among the ``remembered`` hashes of the
    ``fit_images`` fit images. More than 1% (and at least 2) warns, more than 10% fails: fit on the
    training split and score the test split, as OpenOOD does. Cost: none beyond hashing the sample.

    Papers: Yang et al. 2022, OpenOOD, https://arxiv.org/abs/2210.07242; Carlini et al. 2019, https://arxiv.org/abs/1902.06705
    """
    if not all(isinstance(c, int) for c in (found, tried, remembered, fit_images)) or not 0 <= found <= tried:
        raise ValueError(f"need integers 0 ≤ found ≤ tried, got found={found}, tried={tried}")
    share = found / tried if tried else 0.0
    values = {"found": found, "tried": tried, "share": share, "remembered": remembered, "fit_images": fit_images}
    whose = f"{detector} was" if detector else "the detector was"
    partly = "" if remembered >= fit_images else f" (the first {remembered} of them compared)"
    papers = f"{YANG_2022}; {CARLINI_2019}"
    if share > OVERLAP_WARN and found >= 2:
        detail = (
            f"{found} of {tried} scored ID images ({share:.0%}) are images {whose} fitted on ({fit_images} "
            f"images{partly}): a detector scores its own fit data as more in-distribution, so AUROC is inflated; "
            "fit on the ID training split and score the test split"
        )
        return Check("fit_overlap", "fail" if share > OVERLAP_FAIL else "warn", detail, values, papers)
    detail = f"{found} of {tried} scored ID images are among the {fit_images} images {whose} fitted on{partly}"
    return Check("fit_overlap", "pass", detail, values, papers)


def input_range(peaks: dict[str, Sequence[float]]) -> Check:
    """Every set scored together must be on the same input scale: [0, 1] pixels, as the model expects.

    ``peaks``: per set (fit data, ID, OOD, ...), each image's brightest pixel. Images on another scale
    (pixels divided by 255 twice, or by 255 once where the rest are 0..1 already) still pass the range
    check [0, 1], yet score as outliers for the wrong reason: on digits, an OOD set in [0, 1/255] gave
    Mahalanobis AUROC 0.971 where the right scale gives 0.566. Fails when one set's median brightest
    pixel is more than 4 times another's (natural images, digits and noise all reach near 1).
    Cost: none (the pixels are at hand).

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness (§3: check the evaluation's inputs), https://arxiv.org/abs/1902.06705
    """
    medians = {name: float(np.median(np.asarray(v, dtype=np.float64))) for name, v in peaks.items() if len(v)}
    if len(medians) < 2:
        raise ValueError("input_range compares at least two sets of images")
    bright, dark = max(medians, key=medians.__getitem__), min(medians, key=medians.__getitem__)
    ratio = medians[bright] / max(medians[dark], 1 / 255)
    values = {"median_peak": medians, "ratio": ratio}
    listed = ", ".join(f"{name} {m:.3g}" for name, m in medians.items())
    if ratio > RANGE_RATIO:
        detail = (
            f"the {dark} images are on another scale than the {bright} images: their brightest pixel is typically "
            f"{medians[dark]:.3g} against {medians[bright]:.3g} ({listed}), so they are told apart by scale, not "
            "content; give every set as [0, 1] pixels (e.g. divide 0..255 images by 255 once)"
        )
        return Check("input_range", "fail", detail, values, CARLINI_2019)
    return Check("input_range", "pass", f"the sets share one input scale (typical brightest pixel: {listed})", values,
                 CARLINI_2019)  # fmt: skip
