"""Post-hoc OOD detectors of OpenOOD v1.5 that need more than the logits, wrapped from pytorch-ood.

Each reads the model's penultimate features and its head, the ``nn.Linear`` whose output is the
logits, found in the forward pass as for Mahalanobis and ViM (`robustkit.detectors.ood.find_head`;
``features=`` and ``head=`` for a model where no layer qualifies). ReAct, ASH and SCALE reshape the
features and DICE masks the head's weights, then re-apply the head (its weight and bias, frozen at
fit) and score the new logits by their energy; SHE, NNGuide, fDBD, NCI and GradNorm combine the
features with the head; relative Mahalanobis fits Gaussians like Mahalanobis. KL matching, GEN and
temperature scaling read only the logits. All fit on ID training data (ASH, SCALE and GradNorm learn
nothing from it: their fit reads one batch, to find the head). Higher scores mean more likely OOD,
as pytorch-ood returns them.

Not wrapped: RankFeat (removes the rank-1 part of a C×H×W feature map inside the network: on the
penultimate vector it removes everything), OpenMax, MCD, Gram, PNML, NAC and the other pytorch-ood
detectors that need a particular intermediate layer, dropout, extra training or several models.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.backends import require
from ..core.checks import model_device, preserved_state
from ..core.papers import (
    DJURISIC_2023,
    GUO_2017,
    HENDRYCKS_2022,
    HUANG_2021,
    LIU_2023,
    LIU_QIN_2024,
    LIU_QIN_2025,
    PARK_2023,
    REN_2021,
    SUN_2021,
    SUN_LI_2022,
    XU_2024,
    ZHANG_2023_SHE,
)
from ..core.params import Param, positive_int
from .ood import (
    FEATURES,
    HEAD,
    TEMPERATURE,
    Mahalanobis,
    _forward,
    _HeadDetector,
    _LogitDetector,
    check_every_class,
    check_labels,
)


def _fraction(name: str, default: float, help: str, below_one: bool = False) -> Param:
    words = "a fraction below 1" if below_one else "a fraction"
    return Param(name, default, f"{help} ({words}: 0.9 means 90%)", low=0, high=1)


def _below_one(owner: str, name: str, value: float, why: str) -> None:
    if value >= 1:
        raise ValueError(f"{owner}: {name}={value!r} must be below 1: {why}")


class _Shaping(_HeadDetector):
    """Changes the features, then scores the head's logits on them: the head is frozen at fit."""

    def _make(self, pood: Any) -> Any:
        self._frozen = self.head_copy()
        return self._build(pood)

    def _build(self, pood: Any) -> Any:
        raise NotImplementedError

    def _logits(self, z: torch.Tensor) -> torch.Tensor:
        """The frozen head on features of any shape (N×D or N×D×1×1)."""
        return self._frozen(z.flatten(1))


class _HeadOnly(_Shaping):
    """Learns nothing from the fit data: its fit reads one batch, to find the head."""

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        batches = self._features(data, batch_size)
        try:
            first = next(batches, None)
        finally:
            batches.close()
        if first is None:
            raise ValueError(f"{self.name}: the fit data holds no images; fit on ID data so the head can be found")
        self._backend = self._make(pood)


class ReAct(_Shaping):
    """ReAct: clip the features at a percentile of the ID activations, energy of the head's logits (pytorch_ood.detector.ReAct).

    The clipping threshold is the ``percentile`` quantile of all penultimate activations of the fit
    data (the paper and OpenOOD v1.5: the 90th percentile).
    """

    name = "react"
    parameters = (
        FEATURES,
        HEAD,
        _fraction("percentile", 0.9, "quantile of the ID activations the features are clipped at"),
    )
    paper = SUN_2021

    def _build(self, pood):
        return pood.ReAct(backbone=None, head=self._logits, percentile=self.params["percentile"])

    def _fit_backend(self, z, y):
        self._backend.fit_feature_maps(z, y)

    def _predict(self, z):
        return self._backend.predict_feature_maps(z)


class ASH(_HeadOnly):
    """ASH: zero all but the largest features of each input, reshape the rest, energy of the head's logits (pytorch_ood.detector.ASH).

    Shapes the penultimate features (the paper's place for ResNets, after the last pooling).
    Defaults are OpenOOD v1.5's: ASH-B (the kept features binarised to their mean) at the 90th
    percentile; the paper's ImageNet choice is ASH-S.
    """

    name = "ash"
    parameters = (
        FEATURES,
        HEAD,
        Param("variant", "ash-b", "ash-p prunes only, ash-b binarises the kept features, ash-s rescales them",
              types=(str,), choices=("ash-b", "ash-p", "ash-s")),
        _fraction("percentile", 0.9, "share of each input's features set to zero, the smallest first", below_one=True),
    )  # fmt: skip
    paper = DJURISIC_2023

    def _check(self):
        _below_one(self.name, "percentile", self.params["percentile"], "it would zero every feature")

    def _build(self, pood):
        return pood.ASH(
            backbone=None, head=self._logits, variant=self.params["variant"], percentile=self.params["percentile"]
        )

    def _predict(self, z):
        return self._backend.predict_feature_maps(z[:, :, None, None])


class SCALE(_HeadOnly):
    """SCALE: multiply the features by exp(sum of all / sum of the largest), energy of the head's logits (pytorch_ood.detector.SCALE).

    Unlike ASH nothing is pruned; ``percentile`` only sets which features count as the largest
    (OpenOOD v1.5's default: 0.85).
    """

    name = "scale"
    parameters = (
        FEATURES,
        HEAD,
        _fraction("percentile", 0.85, "share of each input's features not counted as its largest", below_one=True),
    )
    paper = XU_2024

    def _check(self):
        _below_one(self.name, "percentile", self.params["percentile"], "no feature would be left to set the scale")

    def _build(self, pood):
        return pood.SCALE(backbone=None, head=self._logits, percentile=self.params["percentile"])

    def _predict(self, z):
        return self._backend.predict_feature_maps(z[:, :, None, None])


class DICE(_HeadDetector):
    """DICE: drop the head's weights that contribute least on ID data, energy of the masked logits (pytorch_ood.detector.DICE).

    A weight's contribution is the mean ID feature times the weight; the fraction ``p`` smallest
    are set to zero (the paper's and OpenOOD v1.5's 0.9).
    """

    name = "dice"
    parameters = (
        FEATURES,
        HEAD,
        _fraction("p", 0.9, "share of the head's weight contributions set to zero", below_one=True),
    )
    paper = SUN_LI_2022

    def _check(self):
        _below_one(self.name, "p", self.params["p"], "it would zero every weight, leaving only the bias")

    def _make(self, pood):
        w, b = self.weights()
        return pood.DICE(None, w=w, b=b, p=self.params["p"])


class SHE(_Shaping):
    """SHE: −inner product of the features with the mean features of the predicted class (pytorch_ood.detector.SHE).

    The class patterns are the mean features of the fit images the model classifies correctly;
    every class needs at least one.
    """

    name = "she"
    parameters = (FEATURES, HEAD)
    paper = ZHANG_2023_SHE

    def _build(self, pood):
        return pood.SHE(None, head=self._logits)

    def _fit_backend(self, z, y):
        check_labels(self.name, y, self._classes)
        check_every_class(self.name, torch.bincount(y, minlength=self._classes))
        try:
            self._backend.fit_features(z, y)
        except ValueError as err:  # a class without a correctly classified image
            raise ValueError(
                f"she: {err} in the fit data: SHE's class patterns are the mean features of the "
                "correctly classified fit images, so fit on data the model classifies"
            ) from None


class NNGuide(_Shaping):
    """NNGuide: −energy times the mean similarity to the k nearest energy-scaled ID features (pytorch_ood.detector.NNGuide).

    The bank is every fit image (the paper and OpenOOD v1.5 take 1% of ImageNet's training set: fit
    on a subset to do the same); ``k`` is OpenOOD v1.5's 100.
    """

    name = "nnguide"
    parameters = (FEATURES, HEAD, positive_int("k", 100, "how many nearest bank features guide the score"))
    paper = PARK_2023

    def _build(self, pood):
        return pood.NNGuide(None, head=self._logits, k=self.params["k"])

    def _fit_backend(self, z, y):
        if len(z) < self.params["k"]:
            raise ValueError(
                f"nnguide: k={self.params['k']} nearest neighbours need at least as many fit images, "
                f"got {len(z)}; pass a smaller k or fit on more images"
            )
        self._backend.fit_features(z, y)


class FDBD(_Shaping):
    """fDBD: −mean distance of the features to the head's decision boundaries, over the distance to the ID mean (pytorch_ood.detector.fDBD)."""

    name = "fdbd"
    parameters = (FEATURES, HEAD)
    paper = LIU_QIN_2024

    def _build(self, pood):
        return pood.fDBD(None, head=self._frozen)


class NCI(_Shaping):
    """NCI: −cosine of the centred features with the predicted class's weights, − α·L1 norm of the features (pytorch_ood.detector.NCI).

    ``alpha`` is OpenOOD v1.5's default (0.0001); the features are centred on the fit data's mean.
    """

    name = "nci"
    parameters = (FEATURES, HEAD, Param("alpha", 0.0001, "weight of the features' L1 norm in the score", low=0))
    paper = LIU_QIN_2025

    def _build(self, pood):
        return pood.NCI(None, head=self._frozen, alpha=self.params["alpha"])


def _head_weight(name: str) -> bool:
    return name == "weight"


class GradNorm(_HeadOnly):
    """GradNorm: −L1 norm of the gradient, w.r.t. the head's weight, of the KL divergence from uniform to the softmax (pytorch_ood.detector.GradNorm).

    The paper's choice of parameters: the last layer's weight only, so the gradient is computed on
    the head alone from the features (one pass of the model, shared with the other detectors).
    """

    name = "gradnorm"
    parameters = (FEATURES, HEAD, TEMPERATURE)
    paper = HUANG_2021

    def _build(self, pood):
        return pood.GradNorm(self._frozen, param_filter=_head_weight, temperature=self.params["temperature"])

    def _predict(self, z):
        return self._backend.predict(z)


class RMD(Mahalanobis):
    """Relative Mahalanobis: class Mahalanobis distance minus that to one Gaussian of all ID features (pytorch_ood.detector.RMD).

    Class means, pooled scatter and the background Gaussian are accumulated batch by batch in
    float64 and set on pytorch-ood's detector as its ``fit_features`` computes them.
    """

    name = "rmd"
    pood_name = "RMD"
    paper = REN_2021

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        counts, mu, outer = self._moments(data, batch_size)
        backend = self._set_gaussians(pood, mu, outer - (mu.T * counts) @ mu)
        n = counts.sum()
        mu0 = (mu.T @ counts) / n  # the mean of all fit features
        background = (
            outer - n * torch.outer(mu0, mu0) + torch.eye(len(outer), dtype=torch.float64, device=outer.device) * 1e-6
        )
        backend.background_mu = mu0.float()
        backend.background_cov = background.float()
        backend.background_precision = torch.linalg.inv(background).float()
        self._backend = backend


class _FittedLogitDetector(_LogitDetector):
    """A logit detector fitted on the logits of the ID fit data."""

    needs_data = True

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        model = self._module()
        device = model_device(model)
        logits, labels = [], []
        with preserved_state(model), torch.no_grad():
            model.eval()
            for xb, yb in self.fit_batches(data, batch_size):
                logits.append(_forward(model, xb.to(device)))
                labels.append(yb.to(device))
        if not logits:
            raise ValueError(f"{self.name}: the fit data holds no images; fit on ID data")
        self._backend = getattr(pood, self.pood_name)(None, **self.backend_args())
        self._fit_logits(torch.cat(logits), torch.cat(labels))

    def _fit_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self._backend.fit_logits(logits, labels)


class KLMatching(_FittedLogitDetector):
    """KL matching: KL divergence of the softmax to the nearest mean softmax of an ID predicted class (pytorch_ood.detector.KLMatching).

    The per-class mean softmax comes from the fit images the model predicts as that class (labels
    are not used); the paper fits on held-out validation images.
    """

    name = "kl_matching"
    pood_name = "KLMatching"
    paper = HENDRYCKS_2022


class TemperatureScaling(_FittedLogitDetector):
    """Temperature scaling: −max softmax at the temperature that minimises the fit data's NLL (pytorch_ood.detector.TemperatureScaling).

    The temperature is fitted by L-BFGS on the fit images' labels; fit on held-out ID images (on
    the training set an overfitted model gets a temperature below 1).
    """

    name = "temperature_scaling"
    pood_name = "TemperatureScaling"
    paper = GUO_2017

    def _fit_logits(self, logits, labels):
        check_labels(self.name, labels, logits.shape[1])
        self._backend.fit_logits(logits.float(), labels)


class GEN(_LogitDetector):
    """GEN: generalised entropy Σ p^γ (1−p)^γ of the largest softmax probabilities (pytorch_ood.detector.GEN).

    pytorch-ood averages instead of summing (the same ranking); γ and M are the paper's and OpenOOD
    v1.5's 0.1 and 100.
    """

    name = "gen"
    pood_name = "GEN"
    parameters = (
        Param("gamma", 0.1, "exponent γ of the generalised entropy", low=0, low_open=True),
        positive_int(
            "m", 100, "how many of the largest softmax probabilities enter the score; None: all", optional=True
        ),
    )
    paper = LIU_2023

    def backend_args(self):
        return {"gamma": self.params["gamma"], "M": self.params["m"]}
