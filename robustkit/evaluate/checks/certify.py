"""Certified against empirical robustness: a certificate is a lower bound, an attack an upper bound.

Paper: Cohen, Rosenfeld & Kolter 2019 (randomised smoothing); Salman et al. 2019 (attacking the
smoothed classifier).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...core.papers import COHEN_2019, SALMAN_2019
from .base import Z_FAIL, Z_WARN, Check, _check_n, _share, noise_tolerance


def certified_vs_empirical(
    radii: Sequence[float],
    certified: Sequence[float],
    empirical: Sequence[float],
    n: int,
    alpha: float = 0.001,
) -> Check:
    """Certified accuracy must not exceed empirical robust accuracy at the same L2 radius.

    At radius r the smoothed classifier's true robust accuracy lies between the certified accuracy (a
    lower bound: each certificate holds, except with probability ``alpha``) and the accuracy an attack
    leaves (an upper bound: every adversarial example it finds inside the ball is a proof). Certified
    above empirical is impossible when both are right, so beyond sampling noise it means a bug: a
    certificate too large (a radius formula or σ that does not match the noise the base classifier
    was smoothed with) or an attack measured on something else (perturbations outside the ball, the
    base classifier judged instead of the smoothed one). An attack that is too *weak* cannot trip this
    check: it leaves empirical accuracy high, above the certified curve, where the gap is expected.

    Both accuracies are on the same ``n`` images; the allowance is `noise_tolerance` (z = 2 warns,
    z = 4 fails) plus ``alpha``, the share of certificates that may be wrong by chance.

    Papers: Cohen, Rosenfeld & Kolter 2019, https://arxiv.org/abs/1902.02918; Salman et al. 2019, https://arxiv.org/abs/1906.04584
    """
    if not (len(radii) == len(certified) == len(empirical)) or not radii:
        raise ValueError(
            f"certified_vs_empirical needs one certified and one empirical accuracy per radius; got "
            f"{len(radii)} radii, {len(certified)} certified and {len(empirical)} empirical"
        )
    _check_n(n)
    if isinstance(alpha, bool) or not 0 < float(alpha) < 1:
        raise ValueError(f"alpha={alpha!r} must lie strictly between 0 and 1")
    cert = [_share("certified", c) for c in certified]
    emp = [_share("empirical", e) for e in empirical]
    rows = []  # (excess beyond the warn tolerance, radius, certified, empirical, tolerance, fails)
    for r, c, e in zip(radii, cert, emp, strict=True):
        tol = noise_tolerance(c, e, n) + alpha
        if c - e > tol:
            rows.append((c - e - tol, float(r), c, e, tol, c - e > noise_tolerance(c, e, n, Z_FAIL) + alpha))
    values = {"radii": [float(r) for r in radii], "certified": cert, "empirical": emp, "n": n, "alpha": alpha}
    paper = f"{COHEN_2019}; {SALMAN_2019}"
    if not rows:
        gap = max(e - c for c, e in zip(cert, emp, strict=True))
        detail = (
            f"certified accuracy stays at or below the empirical robust accuracy at every radius on {n} images "
            f"(largest gap {gap:.1%}: what neither the certificate nor the attack settles)"
        )
        return Check("certified_vs_empirical", "pass", detail, values, paper)
    _, r, c, e, tol, _ = max(rows)
    status = "fail" if any(row[-1] for row in rows) else "warn"
    values.update(radius=r, excess=c - e, tolerance=tol, radii_above=[row[1] for row in rows])
    detail = (
        f"at L2 radius {r:g} certified accuracy {c:.1%} exceeds the empirical robust accuracy {e:.1%} on {n} images, "
        f"beyond sampling noise (±{tol:.1%}): impossible when both are right, since a certified image cannot be "
        "broken inside its radius; look for a bug: a certificate computed with another σ (or n, α) than the noise "
        "the classifier was smoothed with, or an attack that leaves the L2 ball or is judged on the base "
        "classifier instead of the smoothed one"
    )
    return Check("certified_vs_empirical", status, detail, values, paper)


def smoothing_learned(smoothed_accuracy: float, base_accuracy: float, num_classes: int, n: int, sigma: float) -> Check:
    """The smoothed classifier must classify well at radius 0: not at chance, not far below its base model.

    Randomised smoothing certifies whatever the smoothed classifier predicts. A base model never trained
    with Gaussian noise of σ is lost under it, its vote settles on one class whatever the image, and a
    constant classifier is "certified" at every radius with no abstention (the certified and empirical
    curves then sit together at the share of that class). Fails when the smoothed accuracy at radius 0
    (certified right, abstentions wrong) is within 2 binomial standard errors of chance ``1/num_classes``;
    warns when it lost more than half of the base model's clean accuracy above chance, beyond
    `noise_tolerance` (z = 2). The fix: train the base model on noise of the same σ
    (``robustkit.defense("gaussian_augmentation", sigma=σ)``), as Cohen et al. do.

    Paper: Cohen, Rosenfeld & Kolter 2019, https://arxiv.org/abs/1902.02918
    """
    smoothed, base = _share("smoothed_accuracy", smoothed_accuracy), _share("base_accuracy", base_accuracy)
    _check_n(n)
    chance = 1 / num_classes
    at_chance = chance + Z_WARN * (chance * (1 - chance) / n) ** 0.5
    lost = base - smoothed
    half = (base - chance) / 2
    tol = noise_tolerance(smoothed, base, n)
    values = {"smoothed_accuracy": smoothed, "base_accuracy": base, "chance": chance, "sigma": sigma, "n": n,
              "fail_at_or_below": at_chance, "lost": lost, "tolerance": tol}  # fmt: skip
    fix = (
        f"train the base model on Gaussian noise of σ={sigma:g} first "
        f"(robustkit.defense('gaussian_augmentation', sigma={sigma:g}), as Cohen et al. do)"
    )
    if smoothed <= at_chance:
        detail = (
            f"smoothed with σ={sigma:g}, the classifier is right on {smoothed:.1%} of {n} images at radius 0, chance "
            f"level ({chance:.1%}; the base model alone: {base:.1%}): its vote ignores the image, and a constant "
            f"classifier is 'certified' at every radius, so the curve means nothing; {fix}"
        )
        return Check("smoothing_learned", "fail", detail, values, COHEN_2019)
    if lost > max(half, tol):
        detail = (
            f"smoothed with σ={sigma:g}, the classifier is right on {smoothed:.1%} of {n} images at radius 0 against "
            f"{base:.1%} for the base model alone (noise ±{tol:.1%}): it lost more than half its accuracy above chance "
            f"to the noise, so its certificates describe a poor classifier; {fix}"
        )
        return Check("smoothing_learned", "warn", detail, values, COHEN_2019)
    detail = (
        f"smoothed with σ={sigma:g}, the classifier is right on {smoothed:.1%} of {n} images at radius 0 "
        f"(base model alone: {base:.1%}; chance {chance:.1%})"
    )
    return Check("smoothing_learned", "pass", detail, values, COHEN_2019)
