"""Certified accuracy by randomised smoothing (Cohen et al. 2019) and the empirical L2 attack on the
same smoothed classifier, at the same radii (Salman et al. 2019), for `certified_vs_empirical`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks.reference import PGDL2
from ..core.checks import inspect_model
from ..core.distributed import gather, merge_rows, world
from ..core.stages import Stage
from ..defenses.smoothing import (
    ABSTAIN,
    SmoothedClassifier,
    art_certify,
    certify,
    check_smoothing,
    max_radius,
    predict,
)
from ..modelling.data import seeded_sample
from .adaptive import StraightThrough, find_blockers
from .checks.base import Check, warn_problems
from .checks.certify import certified_vs_empirical, smoothing_learned
from .checks.contract import contract_checks
from .checks.masking import gradient_consistency, gradients_available, unstable_predictions
from .predictions import _predict
from .robustness import _indexed_batches, _share

CHECK_SAMPLE = 256  # images the model's contract and masking checks run on (a seeded sample)
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Default L2 radii (pixel units of [0, 1] images), as in the paper's CIFAR-10 table."""
BACKENDS = ("reference", "art")
PARAMETERS = (  # (name, the paper's value, meaning): for the reference page and reports
    ("sigma", "0.12, 0.25, 0.5, 1.0", "std σ of the Gaussian noise, pixel units of [0, 1] images"),
    ("n0", "100", "noise samples per image that select the class"),
    ("n", "100 000", "noise samples per image that bound p_A; the radius is capped at σ·Φ⁻¹(α^(1/n))"),
    ("alpha", "0.001", "probability that a certificate is wrong (one-sided Clopper-Pearson level)"),
    ("radii", "0 … 1.0", "L2 radii of the curve: an image counts at r when right with a radius ≥ r"),
    ("seed", "–", "seeds image i's noise by (seed, i's index), whatever the batch"),
)
"""`certified_accuracy`'s certification parameters (Cohen, Rosenfeld & Kolter 2019)."""


def _radii(radii: Sequence[float] | None) -> list[float]:
    values = list(RADII if radii is None else radii)
    if not values or any(isinstance(r, bool) or not isinstance(r, (int, float)) or r < 0 for r in values):
        raise ValueError(f"radii={radii!r} must be a non-empty list of L2 radii ≥ 0, e.g. [0, 0.25, 0.5]")
    return sorted(float(r) for r in values)


@dataclass
class Certification:
    """`certified_accuracy`'s result: the curve, the abstentions and the per-image certificates.

    ``accuracy[j]``: the share of the ``images`` whose certified prediction is the true class with a
    radius ≥ ``radii[j]`` (an abstention counts as wrong, as in the paper). ``abstained``: images on
    which ``CERTIFY`` abstained. ``max_radius``: the largest radius ``n`` samples can certify at this
    ``alpha`` (σ·Φ⁻¹(α^(1/n))); the curve is 0 beyond it whatever the model. ``forward_passes``: the
    base classifier's forward passes per image (n0 + n), the floor of the cost. ``base_accuracy``: the
    base classifier's clean accuracy on the same images, without noise. ``checks``: the model's
    contract checks and `smoothing_learned` (a smoothed classifier at chance is certified at every radius).
    """

    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int
    backend: str
    radii: list[float]
    accuracy: list[float]
    images: int
    abstained: int
    max_radius: float
    seconds: float
    prediction: torch.Tensor = field(repr=False)
    radius: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    base_accuracy: float = float("nan")
    checks: list[Check] = field(default_factory=list)

    @property
    def abstain_rate(self) -> float:
        return self.abstained / self.images

    @property
    def forward_passes(self) -> int:
        return self.n0 + self.n

    def curve(self, radii: Sequence[float]) -> list[float]:
        """Certified accuracy at other radii, from the same certificates."""
        correct = self.prediction == self.labels
        return [int((correct & (self.radius >= r)).sum()) / self.images for r in _radii(radii)]

    def markdown(self, empirical: Empirical | None = None) -> list[str]:
        """Report lines: the parameters, the curve (beside the empirical one when given), abstentions, cost."""
        columns = ["L2 radius", f"certified accuracy ({self.images} images)"]
        base = (
            f" The base classifier alone, without noise, is right on {self.base_accuracy:.3f} of them."
            if self.base_accuracy == self.base_accuracy  # not NaN
            else ""
        )
        if empirical is not None:
            columns.append("PGD-L2 on the smoothed classifier")
        rows = [
            [f"{r:g}", f"{a:.3f}", *([f"{empirical.accuracy[j]:.3f}"] if empirical is not None else [])]
            for j, (r, a) in enumerate(zip(self.radii, self.accuracy, strict=True))
        ]
        lines = [
            f"`CERTIFY` (Cohen et al. 2019) with σ={self.sigma:g}, n0={self.n0}, n={self.n}, α={self.alpha:g}, "
            f"seed {self.seed}, backend `{self.backend}` (the paper: n0=100, n=100 000, α=0.001). An image counts at "
            "radius r when its certified class is right and its radius is at least r; an abstention counts as wrong.",
            "",
            f"## Certified accuracy (the {self.images} test images)",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
            *["| " + " | ".join(row) + " |" for row in rows],
            "",
            f"`CERTIFY` abstained on {self.abstained} of the {self.images} images.{base} With n={self.n} and α={self.alpha:g} "
            f"no radius above {self.max_radius:.3f} can be certified (σ·Φ⁻¹(α^(1/n))): the curve is 0 beyond it "
            f"whatever the model. Cost: {self.forward_passes} forward passes of the base classifier per image, "
            f"{self.seconds:.1f} s in all ({1000 * self.seconds / self.images:.0f} ms per image).",
        ]
        if empirical is not None:
            a = empirical.attack
            lines += [
                "",
                f"PGD-L2 ({a['steps']} steps, {a['eot_samples']} noise samples per gradient) attacked the smoothed "
                f"classifier; a vote of {a['judge_samples']} noisy samples judged each adversarial image, and an "
                "image counts when it survives every radius up to r. Certified accuracy is a lower bound on the "
                "smoothed classifier's robust accuracy and the attack's an upper bound: the truth lies between.",
            ]
            if empirical.first_accuracy is not None:
                plain = ", ".join(f"{r:g}: {f:.3f}" for r, f in zip(empirical.radii, empirical.first_accuracy, strict=True))
                lines += [
                    "",
                    f"The base classifier's gradients are masked (`gradients_available`, `gradient_consistency` in "
                    f"the sanity checks, which judge the base classifier), so the attack also ran through BPDA "
                    f"({a['bpda']}; Athalye et al. 2018) and the PGD-L2 column is the worst case over both: it "
                    f"already answers them. PGD-L2 alone would have read {plain}.",
                ]
        return lines

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (without the per-image tensors)."""
        return {
            "sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha, "seed": self.seed,
            "backend": self.backend, "radii": self.radii, "accuracy": self.accuracy, "images": self.images,
            "abstained": self.abstained, "abstain_rate": self.abstain_rate, "max_radius": self.max_radius,
            "seconds": self.seconds, "forward_passes_per_image": self.forward_passes, "base_accuracy": self.base_accuracy,
            "checks": [c.as_dict() for c in self.checks],
        }  # fmt: skip


def certified_accuracy(
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    radii: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    backend: str = "reference",
    distributed: bool = True,
) -> Certification:
    """Certified accuracy of the base classifier ``model`` smoothed with N(0, σ²I), against the L2 radius.

    Runs ``CERTIFY`` (Cohen et al. 2019) on every image: ``n0`` noisy samples select the class, ``n``
    more bound its probability from below (Clopper-Pearson at level ``alpha``), and the certified
    radius is σ·Φ⁻¹(p_A_lower); an image counts at radius r when its class is right and its radius is
    at least r. The paper uses n0=100, n=100 000, α=0.001; a smaller ``n`` caps the radius
    (``max_radius``). Image i's noise is seeded by (``seed``, its index in ``x``), so the result does
    not depend on ``batch_size`` (noisy copies per forward pass) or on sharding: inside an initialised
    torch.distributed process group each rank certifies its share and every rank returns the whole.
    ``backend="art"`` runs ART's ``PyTorchRandomizedSmoothing.certify`` instead (numpy noise, seeded
    per image the same way). ``x``: a tensor (with ``y``), an ImageSet or a Dataset/DataLoader.

    Paper: Cohen, Rosenfeld & Kolter 2019, Certified Adversarial Robustness via Randomized Smoothing, https://arxiv.org/abs/1902.02918
    """
    sigma, n, alpha, n0, batch_size = check_smoothing(sigma, n, alpha, n0, batch_size)
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    grid = _radii(radii)
    run = certify if backend == "reference" else art_certify
    rank, size = world(distributed)
    started = time.time()

    def local() -> list[tuple[torch.Tensor, torch.Tensor]]:
        rows = []
        st = Stage(f"certify σ={sigma:g}", _share(x, rank, size)).start(f"n0={n0}, n={n} noise samples per image")
        for xb, yb, _, ib in _indexed_batches(model, x, y, 256, rank=rank, world=size):
            c = run(model, xb, sigma, n0, n, alpha, seed=seed, index=ib, batch_size=batch_size)
            base = _predict(model, xb).double()  # one noiseless pass: the base classifier's own accuracy
            rows.append((ib, torch.stack([c.prediction.double(), c.radius, yb.cpu().double(), base], 1)))
            st.advance(len(xb))
        st.end()
        return rows

    parts = [row for part in gather(local, size) for row in part]
    if not parts:
        raise ValueError("the data is empty; pass at least one image")
    table = merge_rows(parts)
    prediction, radius, labels = table[:, 0].long(), table[:, 1], table[:, 2].long()
    images = len(table)
    correct = prediction == labels
    accuracy = [int((correct & (radius >= r)).sum()) / images for r in grid]
    result = Certification(
        sigma, n0, n, alpha, seed, backend, grid, accuracy, images, int((prediction == ABSTAIN).sum()),
        max_radius(sigma, n, alpha), time.time() - started, prediction, radius, labels,
        base_accuracy=float((table[:, 3].long() == labels).double().mean()),
    )  # fmt: skip
    xs, ys = seeded_sample(x if y is None else (x, y), CHECK_SAMPLE, seed)
    result.checks = contract_checks(model, xs, ys, seed=seed)
    num_classes = inspect_model(model, xs)
    result.checks.append(smoothing_learned(result.curve([0.0])[0], result.base_accuracy, num_classes, images, sigma))
    warn_problems(result.checks)
    return result


@dataclass
class Empirical:
    """`empirical_accuracy`'s result: robust accuracy of the smoothed classifier per radius on ``images``
    images, how it was measured, and the gradient checks of the base classifier the attack reads
    (``checks``: a base whose gradients are masked makes the curve an overstatement)."""

    radii: list[float]
    accuracy: list[float]
    images: int
    attack: dict[str, Any]
    seconds: float
    checks: list[Check] = field(default_factory=list)
    first_accuracy: list[float] | None = None
    """With a flagged base: the curve of the plain attack alone (``accuracy`` is then the worst case over it and BPDA)."""

    def as_dict(self) -> dict[str, Any]:
        return {"radii": self.radii, "accuracy": self.accuracy, "images": self.images, "attack": self.attack,
                "seconds": self.seconds, "checks": [c.as_dict() for c in self.checks],
                "first_accuracy": self.first_accuracy}  # fmt: skip


def empirical_accuracy(
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    *,
    sigma: float,
    radii: Sequence[float] | None = None,
    steps: int = 10,
    samples: int = 16,
    n: int = 100,
    seed: int = 0,
    batch_size: int = 64,
) -> Empirical:
    """Robust accuracy of the smoothed classifier under PGD-L2 at each radius (an upper bound on it).

    The attack is robustkit's PGD-L2 (``steps`` steps, random start) on `SmoothedClassifier`: the log
    of the base classifier's softmax averaged over ``samples`` Gaussian draws, whose gradient is the
    expectation over the noise (Salman et al. 2019's SmoothAdv attack, EOT over the noise). Each
    adversarial image is judged by the smoothed classifier itself: the majority vote of ``n`` noisy
    samples (`predict` without abstention, noise seeded by (seed, index)), not the base classifier.
    An image counts as robust at r when the vote is right on the clean image and on the attack's
    output at r and at every smaller radius (a larger ball holds the smaller one's examples).

    The attack follows the base classifier's gradients, averaged over the noise, so the base's own
    masking (a rounding or quantising step, gradients that lead nowhere) makes the curve an
    overstatement that `certified_vs_empirical` cannot see (certified stays below it): ``checks`` holds
    `gradients_available`, `gradient_consistency` and `unstable_predictions` of the base classifier on
    a seeded sample of 256 images. When the first two flag the base, the attack also runs through BPDA
    with the identity past the step that blocks the gradient (`robustkit.evaluate.adaptive.find_blockers`,
    Athalye et al. 2018), and an image counts as robust only if it survives both: ``accuracy`` is that
    worst case, ``first_accuracy`` the plain attack's curve, ``attack["bpda"]`` what was bypassed.
    """
    sigma, n, _, _, _ = check_smoothing(sigma, n, 0.5)
    grid = _radii(radii)
    xs, ys = seeded_sample(x if y is None else (x, y), CHECK_SAMPLE, seed)
    checks = [gradients_available(model, xs, ys), gradient_consistency(model, xs, ys, seed=seed), unstable_predictions(model, xs)]
    attacked = [SmoothedClassifier(model, sigma, samples)]
    bypassed: list[str] = []
    if any(not c.ok for c in checks[:2]):  # masked gradients: BPDA past the blocking step (issue 32.10)
        inputs, outputs, bypassed = find_blockers(model, xs[:16], seed=seed)
        if inputs or outputs:
            attacked.append(SmoothedClassifier(StraightThrough(model, inputs, outputs), sigma, samples))
    hits = [0] * len(grid)
    first_hits = [0] * len(grid)
    images = 0
    started = time.time()
    st = Stage(f"PGD-L2 on the smoothed classifier σ={sigma:g}", _share(x, 0, 1)).start(f"radii {', '.join(f'{r:g}' for r in grid)}")
    for xb, yb, _, ib in _indexed_batches(model, x, y, batch_size):
        labels = yb.cpu()
        robust = predict(model, xb, sigma, n, None, seed=seed, index=ib) == labels
        first = robust.clone()  # the plain attack's verdicts alone (it attacks what it has not broken yet)
        for j, r in enumerate(grid):
            attack = PGDL2(eps=r, steps=steps, seed=seed)
            for k, smoothed in enumerate(attacked):
                standing = first if k == 0 else robust
                if r > 0 and standing.any():
                    rows = standing.nonzero().flatten()
                    adv = attack(smoothed, xb[rows], yb[rows], index=ib[rows])
                    standing[rows] = predict(model, adv, sigma, n, None, seed=seed, index=ib[rows]) == labels[rows]
                if k == 0:
                    robust &= first
            hits[j] += int(robust.sum())
            first_hits[j] += int(first.sum())
        images += len(xb)
        st.advance(len(xb))
    st.end()
    if images == 0:
        raise ValueError("the data is empty; pass at least one image")
    described = {"name": "pgd_l2", "backend": "reference", "steps": steps, "eot_samples": samples, "judge_samples": n,
                 "seed": seed, "on": "the smoothed classifier (log of the mean softmax over the noise)"}  # fmt: skip
    if len(attacked) > 1:
        described["bpda"] = "identity past " + "; ".join(bypassed)
    result = Empirical(grid, [h / images for h in hits], images, described, time.time() - started, checks)
    if len(attacked) > 1:
        result.first_accuracy = [h / images for h in first_hits]
    warn_problems(result.checks)
    return result


def certified_vs_empirical_check(certified: Certification, empirical: Empirical) -> Check:
    """`certified_vs_empirical` on the two results (same images and radii), warned as a `RobustkitWarning`."""
    if certified.images != empirical.images or certified.radii != empirical.radii:
        raise ValueError(
            f"the certified curve ({certified.images} images, radii {certified.radii}) and the empirical one "
            f"({empirical.images} images, radii {empirical.radii}) must be on the same images and radii"
        )
    check = certified_vs_empirical(certified.radii, certified.accuracy, empirical.accuracy, certified.images,
                                   certified.alpha)  # fmt: skip
    warn_problems([check])
    return check
