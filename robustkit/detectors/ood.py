"""pytorch-ood detectors behind robustkit's Detector protocol.

Logit-based detectors (max logit, max softmax, energy, entropy, ODIN) need only the model.
Feature-based ones (Mahalanobis, ViM, KNN) fit on ID training data and need the model's
penultimate features: by default the input of the model's last ``nn.Linear`` (captured
with a forward hook, so any classifier that ends in a linear layer works); pass
``features=callable`` (and, for ViM, ``head=nn.Linear``) for any other model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.backends import require
from ..core.checks import model_device, preserved_state
from ..core.papers import HENDRYCKS_2017, HENDRYCKS_2022, LEE_2018, LIANG_2018, LIU_2020, SUN_2022, WANG_2022
from ..core.params import Param, component, positive_int
from .base import Detector

TEMPERATURE = Param("temperature", 1.0, "softmax temperature T", low=0, low_open=True)
FEATURES = component("features", (Callable,), "callable x → N×D penultimate features; default: the last linear layer's input")


class _LogitDetector(Detector):
    """A pytorch-ood detector that reads the logits; ``backend_args`` maps our names to its."""

    pood_name: ClassVar[str]

    def backend_args(self) -> dict[str, Any]:
        return {"t": self.params["temperature"]} if "temperature" in self.params else {}

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        self._backend = getattr(pood, self.pood_name)(None, **self.backend_args())

    @torch.no_grad()
    def _score(self, x):
        return self._backend.predict_logits(self._module()(x))

    def reads(self) -> str | None:
        return "logits"

    def score_outputs(self, logits, features):
        return self._backend.predict_logits(logits)


class MaxLogit(_LogitDetector):
    """−max logit (pytorch_ood.detector.MaxLogit)."""

    name = "max_logit"
    pood_name = "MaxLogit"
    paper = HENDRYCKS_2022


class MaxSoftmax(_LogitDetector):
    """−max softmax probability at a temperature (pytorch_ood.detector.MaxSoftmax)."""

    name = "max_softmax"
    pood_name = "MaxSoftmax"
    parameters = (TEMPERATURE,)
    paper = HENDRYCKS_2017


class Energy(_LogitDetector):
    """−T·logsumexp(logits/T) (pytorch_ood.detector.EnergyBased)."""

    name = "energy"
    pood_name = "EnergyBased"
    parameters = (TEMPERATURE,)
    paper = LIU_2020


class Entropy(_LogitDetector):
    """Entropy of the softmax (pytorch_ood.detector.Entropy)."""

    name = "entropy"
    pood_name = "Entropy"
    paper = HENDRYCKS_2017


class ODIN(Detector):
    """ODIN: temperature scaling plus an input perturbation (pytorch_ood.detector.ODIN)."""

    name = "odin"
    parameters = (
        Param("temperature", 1000.0, "softmax temperature T", low=0, low_open=True),
        Param("eps", 0.0014, "size of the input perturbation that raises the top softmax score", low=0),
    )
    paper = LIANG_2018

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        self._backend = pood.ODIN(self._module(), eps=self.params["eps"], temperature=self.params["temperature"])

    def _score(self, x):
        with torch.enable_grad():
            return self._backend.predict(x)


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The model's last registered ``nn.Linear`` (its classifier head), or ``None``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last linear layer for ``x`` (N×D), captured by a forward hook."""
    return logits_and_features(model, x)[1]


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: the logits, and the input of the model's last linear layer (N×D)."""
    head = last_linear(model)
    if head is None:
        raise TypeError(
            "this detector needs penultimate features, and the model has no nn.Linear layer to take them from; "
            "pass features=callable (x → N×D features) when constructing the detector"
        )
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, captured[-1].flatten(1)


class _FeatureDetector(Detector):
    """Fits a pytorch-ood features detector on the model's penultimate features."""

    needs_data = True
    pood_name: ClassVar[str]

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        features = self.params["features"]
        return features(x) if features is not None else penultimate(self._module(), x)

    def _make(self, pood: Any) -> Any:
        return getattr(pood, self.pood_name)(None)

    def _features(self, data, batch_size) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(features, labels)`` per batch of the fit data, on the model's device."""
        model = self._module()
        device = model_device(model)
        with preserved_state(model), torch.no_grad():
            model.eval()
            for xb, yb in self.fit_batches(data, batch_size):
                yield self._encode(xb.to(device)), yb.to(device)

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        pairs = list(self._features(data, batch_size))  # N×D features; the images are not kept
        self._backend = self._make(pood)
        self._backend.fit_features(torch.cat([z for z, _ in pairs]), torch.cat([y for _, y in pairs]))

    @torch.no_grad()
    def _score(self, x):
        return self._backend.predict_features(self._encode(x))

    def reads(self) -> str | None:
        return "features" if self.params["features"] is None else None

    def score_outputs(self, logits, features):
        return self._backend.predict_features(features)


class Mahalanobis(_FeatureDetector):
    """Class-conditional Gaussians with a shared covariance (pytorch_ood.detector.Mahalanobis).

    The class means and the pooled scatter matrix are accumulated batch by batch (in float64),
    so fitting holds neither the images nor the features; the result is set on pytorch-ood's
    detector exactly as its ``fit_features`` would (scatter not divided by N, ridge 1e-6).
    """

    name = "mahalanobis"
    pood_name = "Mahalanobis"
    parameters = (FEATURES,)
    paper = LEE_2018

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        sums: torch.Tensor | None = None
        counts = outer = None
        for z, y in self._features(data, batch_size):
            z = z.double()
            if sums is None:
                sums = torch.zeros(0, z.shape[1], dtype=torch.float64, device=z.device)
                counts = torch.zeros(0, dtype=torch.float64, device=z.device)
                outer = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64, device=z.device)
            classes = int(y.max()) + 1
            if classes > len(sums):
                sums = torch.cat([sums, sums.new_zeros(classes - len(sums), z.shape[1])])
                counts = torch.cat([counts, counts.new_zeros(classes - len(counts))])
            sums.index_add_(0, y, z)
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            outer += z.T @ z
        assert sums is not None and counts is not None and outer is not None
        missing = (counts == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"mahalanobis needs every class in the fit data; classes {missing} have no images")
        mu = sums / counts[:, None]
        scatter = outer - (mu.T * counts) @ mu  # Σ_i z_i z_iᵀ − Σ_c n_c μ_c μ_cᵀ = Σ_c Σ_{i∈c} (z_i−μ_c)(z_i−μ_c)ᵀ
        scatter += torch.eye(len(scatter), dtype=torch.float64, device=scatter.device) * 1e-6
        self._backend = pood.Mahalanobis(None)
        self._backend.mu = mu.float()
        self._backend.cov = scatter.float()
        self._backend.precision = torch.linalg.inv(scatter).float()


class KNN(_FeatureDetector):
    """Distance to the k-th nearest ID training feature (pytorch_ood.detector.KNN)."""

    name = "knn"
    pood_name = "KNN"
    parameters = (FEATURES, positive_int("k", 10, "which nearest neighbour's distance is the score"))
    paper = SUN_2022

    def _make(self, pood):
        return pood.KNN(None, k=self.params["k"])


class ViM(_FeatureDetector):
    """Virtual-logit matching (pytorch_ood.detector.ViM); uses the model's last linear layer."""

    name = "vim"
    pood_name = "ViM"
    parameters = (
        FEATURES,
        component("head", (nn.Linear,), "the classifier's last linear layer; default: found in the model"),
        positive_int("d", None, "dimension of the principal subspace; None: half the feature size", optional=True),
    )
    paper = WANG_2022

    def _make(self, pood):
        head = self.params["head"] or last_linear(self._module())
        if not isinstance(head, nn.Linear):
            raise TypeError("vim needs the model's last linear layer: pass head=nn.Linear")
        d = self.params["d"] or max(1, min(head.in_features // 2, head.in_features - 1))
        return pood.ViM(None, d=d, w=head.weight.detach(), b=head.bias.detach())
