"""Randomised smoothing (Cohen, Rosenfeld & Kolter 2019): the smoothed classifier, its ``PREDICT`` and
``CERTIFY`` procedures, ART's implementation of them, and Gaussian-noise-augmentation training.

The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²I), is robust within the L2 radius
R = σ·Φ⁻¹(p_A) around x when the base classifier f returns class A with probability p_A > ½ under
the noise. ``CERTIFY`` picks A from ``n0`` noisy samples, counts A in ``n`` fresh ones, bounds p_A from
below with the one-sided Clopper-Pearson bound at level α (statsmodels ``proportion_confint(nA, n,
alpha=2α, method="beta")``, as the paper's code) and returns (A, σ·Φ⁻¹(p_A_lower)), or abstains when
the bound is below ½. ``PREDICT`` returns the top class of ``n`` samples unless a two-sided binomial test
of the top two counts has a p-value above α (then it abstains). Each procedure is wrong with
probability at most α per image.

Every image's noise comes from a generator seeded by (``seed``, the image's index in the whole data)
and is drawn in fixed chunks of `NOISE_CHUNK` samples, so results do not depend on the batch size, on
which other images share a batch, or on sharding. The noise is added without clipping to [0, 1], as in
the paper (the certificate is about the Gaussian around x, wherever it falls).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks.base import check_index, example_generators
from ..core.checks import check_images, inspect_model, model_device, preserved_state
from ..core.papers import COHEN_2019
from ..core.params import Param, flag
from ..modelling.data import ImageSet
from ..modelling.train import fit, train_model
from .base import CACHE, PROGRESS, TRAIN_CONFIG, Defense, fresh_copy, fresh_network, spec_of

ABSTAIN = -1
"""The class `predict` and `certify` return when they abstain."""
NOISE_CHUNK = 1000
"""Noise samples drawn per call of an image's generator (fixed, so batch sizes do not change the noise)."""

SIGMA = Param("sigma", 0.25, "std σ of the Gaussian noise, in pixel units of [0, 1] images", low=0, low_open=True)


def check_smoothing(
    sigma: float, n: int, alpha: float, n0: int | None = None, batch_size: int = 1000
) -> tuple[float, int, float, int | None, int]:
    """Validate the smoothing parameters; a clear ``ValueError`` names the bad one and the fix."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma={sigma!r} must be a positive number (the noise std, e.g. 0.25 for [0, 1] images)")
    for name, value in (("n", n), ("n0", n0), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r} must be an integer ≥ 1 (a number of noise samples)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must lie strictly between 0 and 1 (the failure probability, e.g. 0.001)")
    if n0 is not None and n0 > n:
        raise ValueError(
            f"n0={n0} is larger than n={n}: n0 samples only select the class, n samples estimate its probability "
            "and decide the radius; take n0 ≪ n (the paper: n0=100, n=100 000)"
        )
    return float(sigma), n, float(alpha), n0, batch_size


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius ``CERTIFY`` can return with ``n`` samples: σ·Φ⁻¹(α^(1/n)), reached when
    all ``n`` samples vote for the class (the Clopper-Pearson lower bound of n out of n is α^(1/n))."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def lower_confidence_bound(count: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper-Pearson lower bound on a binomial proportion, as the paper's code."""
    from statsmodels.stats.proportion import proportion_confint

    return float(proportion_confint(count, n, alpha=2 * alpha, method="beta")[0])


def radius(count: int, n: int, sigma: float, alpha: float) -> float:
    """σ·Φ⁻¹(p_A_lower) for ``count`` votes of ``n`` (negative or zero: no certificate)."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(lower_confidence_bound(count, n, alpha)))


def _noisy(
    x: torch.Tensor, index: torch.Tensor, sigma: float, phases: tuple[int, ...], seed: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(row, phase, noisy copies)`` chunks: image ``row``'s ``phases[k]`` samples of phase k, in order,
    from its own generator seeded by (seed, index[row])."""
    xc = x.detach().cpu()
    for row, generator in enumerate(example_generators(seed, index)):
        image = xc[row]
        for phase, count in enumerate(phases):
            done = 0
            while done < count:
                k = min(NOISE_CHUNK, count - done)
                noise = torch.randn((k, *image.shape), generator=generator, dtype=image.dtype)
                yield row, phase, image + sigma * noise
                done += k


@torch.no_grad()
def vote_counts(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    phases: tuple[int, ...],
    seed: int,
    index: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> list[torch.Tensor]:
    """Per phase, an N×K int64 tensor: how often the base ``model`` predicts each class on that phase's
    noisy copies of each image (``phases[k]`` copies each). Copies of several images share a forward
    pass of up to ``batch_size`` rows."""
    check_images(x)
    num_classes = inspect_model(model, x)
    index = torch.arange(len(x)) if index is None else check_index(index, len(x))
    counts = [torch.zeros(len(x), num_classes, dtype=torch.int64) for _ in phases]
    device = model_device(model)
    pending: list[tuple[int, int, torch.Tensor]] = []
    size = 0

    def flush(limit: int) -> None:
        nonlocal pending, size
        rows = torch.cat([torch.full((len(b),), r * len(phases) + p, dtype=torch.int64) for r, p, b in pending])
        batch = torch.cat([b for _, _, b in pending])
        pending, size = [], 0
        for start in range(0, len(batch), limit):
            preds = model(batch[start : start + limit].to(device)).argmax(1).cpu()
            tags = rows[start : start + limit]
            for phase in range(len(phases)):
                keep = tags % len(phases) == phase
                if keep.any():
                    flat = (tags[keep] // len(phases)) * num_classes + preds[keep]
                    counts[phase].view(-1).index_add_(0, flat, torch.ones_like(flat))

    with preserved_state(model):
        model.eval()
        for row, phase, chunk in _noisy(x, index, sigma, phases, seed):
            pending.append((row, phase, chunk))
            size += len(chunk)
            if size >= batch_size:
                flush(batch_size)
        if pending:
            flush(batch_size)
    return counts


@dataclass
class Certificates:
    """`certify`'s per-image results: ``prediction`` (`ABSTAIN` = −1), ``radius`` (0 when abstaining),
    ``count`` (votes for the selected class among the ``n`` samples) and ``index``."""

    prediction: torch.Tensor
    radius: torch.Tensor
    count: torch.Tensor
    index: torch.Tensor


def certify(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    seed: int = 0,
    index: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> Certificates:
    """``CERTIFY`` (Cohen et al. 2019, Algorithm / Pseudocode): for each image, the class A the base
    ``model`` picks most often among ``n0`` noisy samples, and the radius σ·Φ⁻¹(p_A_lower) from the
    votes for A among ``n`` further samples; abstain (−1, radius 0) when p_A_lower < ½.

    Image i's noise: ``n0`` then ``n`` samples from a generator seeded by (``seed``, ``index[i]``)."""
    sigma, n, alpha, n0, batch_size = check_smoothing(sigma, n, alpha, n0, batch_size)
    index = torch.arange(len(x)) if index is None else check_index(index, len(x))
    select, estimate = vote_counts(model, x, sigma, (n0, n), seed, index, batch_size)
    chosen = select.argmax(1)
    votes = estimate.gather(1, chosen[:, None])[:, 0]
    prediction = torch.full((len(x),), ABSTAIN, dtype=torch.int64)
    radii = torch.zeros(len(x), dtype=torch.float64)
    for i, (c, k) in enumerate(zip(chosen.tolist(), votes.tolist(), strict=True)):
        p_lower = lower_confidence_bound(k, n, alpha)
        if p_lower >= 0.5:  # the paper's code (and ART): abstain when pA_lower < 1/2; at 1/2 the radius is 0
            prediction[i] = c
            radii[i] = radius(k, n, sigma, alpha)
    return Certificates(prediction, radii, votes, index)


def predict(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    n: int = 1000,
    alpha: float | None = 0.001,
    seed: int = 0,
    index: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> torch.Tensor:
    """``PREDICT`` (Cohen et al. 2019): the top class of ``n`` noisy samples, or `ABSTAIN` when the
    two-sided binomial test of the top two counts has a p-value above ``alpha``.

    ``alpha=None`` never abstains (the plain majority vote, an estimate of g(x) itself)."""
    from scipy.stats import binomtest

    sigma, n, _, _, batch_size = check_smoothing(sigma, n, 0.5 if alpha is None else alpha, None, batch_size)
    index = torch.arange(len(x)) if index is None else check_index(index, len(x))
    (counts,) = vote_counts(model, x, sigma, (n,), seed, index, batch_size)
    top2 = counts.topk(2, dim=1)
    out = top2.indices[:, 0].clone()
    if alpha is not None:
        for i, (a, b) in enumerate(top2.values.tolist()):
            if binomtest(a, a + b, p=0.5).pvalue > alpha:
                out[i] = ABSTAIN
    return out


class SmoothedClassifier(nn.Module):
    """The smoothed classifier as an ``nn.Module`` an attack can differentiate (Cohen et al. 2019).

    ``forward`` returns the log of the Monte Carlo average of the base classifier's softmax over
    ``samples`` Gaussian draws: the "soft" smoothed classifier that Salman et al. 2019 (SmoothAdv)
    attack, whose gradient is the expectation over the noise (EOT with ``samples`` draws per step).
    Its noise comes from the global torch RNG (an attack's call seeds it). For the hard classifier
    g itself use `predict` (a vote with per-image seeded noise) and `certify`, also methods here.
    """

    def __init__(self, base: nn.Module, sigma: float = 0.25, samples: int = 32):
        super().__init__()
        check_smoothing(sigma, samples, 0.5)
        self.base, self.sigma, self.samples = base, float(sigma), samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x.repeat_interleave(self.samples, 0)
        noisy = noisy + self.sigma * torch.randn_like(noisy)
        probs = self.base(noisy).softmax(1).view(len(x), self.samples, -1).mean(1)
        return probs.clamp_min(1e-12).log()

    def predict(self, x: torch.Tensor, n: int = 1000, alpha: float | None = 0.001, **kwargs: Any) -> torch.Tensor:
        """`predict` with this classifier's base and σ."""
        return predict(self.base, x, self.sigma, n, alpha, **kwargs)

    def certify(self, x: torch.Tensor, n0: int = 100, n: int = 10_000, alpha: float = 0.001, **kwargs: Any) -> Certificates:
        """`certify` with this classifier's base and σ."""
        return certify(self.base, x, self.sigma, n0, n, alpha, **kwargs)


# ---------------------------------------------------------------- ART's implementation


def _art_estimator(model: nn.Module, x: torch.Tensor, sigma: float, sample_size: int, alpha: float) -> Any:
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    device = model_device(model)
    return PyTorchRandomizedSmoothing(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=inspect_model(model, x),
        device_type="gpu" if device.type == "cuda" else "cpu",
        sample_size=sample_size,
        scale=sigma,
        alpha=alpha,
    )


def _numpy_seeds(seed: int, index: torch.Tensor) -> list[int]:
    """32-bit seeds for numpy's global RNG, one per image, from (seed, index) as `example_generators`."""
    return [int(g.initial_seed()) % 2**32 for g in example_generators(seed, index)]


def art_certify(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    seed: int = 0,
    index: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> Certificates:
    """`certify` through ART's ``PyTorchRandomizedSmoothing.certify`` (``sample_size`` = n0).

    ART draws its noise from numpy's global RNG; it is seeded per image by (``seed``, index) and the
    caller's numpy state is restored afterwards. ART's procedure is the paper's (n0 samples select,
    n estimate, the same Clopper-Pearson bound, abstain below ½) but its noise differs from the
    reference `certify`'s, so the two agree statistically, not sample for sample. ``count`` is not
    reported by ART: it is −1."""
    sigma, n, alpha, n0, batch_size = check_smoothing(sigma, n, alpha, n0, batch_size)
    check_images(x)
    index = torch.arange(len(x)) if index is None else check_index(index, len(x))
    estimator = _art_estimator(model, x, sigma, n0, alpha)
    xs = x.detach().cpu().numpy().astype(np.float32)
    prediction, radii = [], []
    state = np.random.get_state()
    try:
        with preserved_state(model):
            for row, s in enumerate(_numpy_seeds(seed, index)):
                np.random.seed(s)
                p, r = estimator.certify(xs[row : row + 1], n=n, batch_size=batch_size)
                prediction.append(int(p[0]))
                radii.append(float(r[0]))
    finally:
        np.random.set_state(state)
    count = torch.full((len(x),), -1, dtype=torch.int64)
    return Certificates(torch.tensor(prediction, dtype=torch.int64), torch.tensor(radii, dtype=torch.float64), count, index)


def art_predict(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    n: int = 1000,
    alpha: float = 0.001,
    seed: int = 0,
    index: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> torch.Tensor:
    """`predict` through ART's ``PyTorchRandomizedSmoothing.predict`` (abstaining: an all-zero row,
    returned here as `ABSTAIN`); numpy's RNG seeded per image as in `art_certify`."""
    sigma, n, alpha, _, batch_size = check_smoothing(sigma, n, alpha, None, batch_size)
    check_images(x)
    index = torch.arange(len(x)) if index is None else check_index(index, len(x))
    estimator = _art_estimator(model, x, sigma, n, alpha)
    xs = x.detach().cpu().numpy().astype(np.float32)
    out = []
    state = np.random.get_state()
    try:
        with preserved_state(model):
            for row, s in enumerate(_numpy_seeds(seed, index)):
                np.random.seed(s)
                onehot = estimator.predict(xs[row : row + 1], batch_size=batch_size, is_abstain=True)[0]
                out.append(int(onehot.argmax()) if onehot.any() else ABSTAIN)
    finally:
        np.random.set_state(state)
    return torch.tensor(out, dtype=torch.int64)


# ---------------------------------------------------------------- the base classifier's training


class GaussianAugmentation(Defense):
    """Train the classifier on Gaussian-noised images: randomised smoothing's base classifier.

    Every training batch gets N(0, σ²) noise on each pixel, unclipped (Cohen et al. 2019, §4: the base
    classifier is trained with the noise it will be smoothed with). With ``finetune`` a copy of the
    given model is trained further on noisy images (cheaper; not cached). The result is the base classifier
    f; smooth it with ``SmoothedClassifier(f, sigma)`` and certify it with `certify` at the same σ.
    """

    name = "gaussian_augmentation"
    needs_data = True
    parameters = (
        SIGMA,
        flag("finetune", False, "fine-tune a copy of the given model with noise (uncached) instead of training anew"),
        TRAIN_CONFIG,
        CACHE,
        PROGRESS,
    )
    paper = COHEN_2019

    def batch_hook(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the noise (drawn from the training's seeded global RNG)."""
        return x + self.params["sigma"] * torch.randn_like(x), y

    def _apply(self, model: nn.Module, data: ImageSet | None) -> nn.Module:
        assert data is not None
        p = self.params
        spec = spec_of(model)
        if p["finetune"]:
            net = fresh_copy(model)
            fit(net, data.x, data.y, self.train_config, self.batch_hook, progress=p["progress"])
            return net.eval()
        if spec is None:  # a user's architecture: a fresh copy, trained uncached on its device
            net = fresh_network(model, self.train_config.seed).to(model_device(model))
            fit(net, data.x, data.y, self.train_config, self.batch_hook, progress=p["progress"])
            return net.eval()
        net, _ = train_model(
            spec, data, self.train_config, batch_hook=self.batch_hook, key_extra=self.cache_key(), cache=p["cache"],
            progress=p["progress"], device=model_device(model),
        )  # fmt: skip
        return net
