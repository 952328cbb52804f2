"""pytorch-ood detectors behind robustkit's Detector protocol.

Logit-based detectors (max logit, max softmax, energy, entropy, ODIN) need only the model.
Feature-based ones (Mahalanobis, ViM, KNN) fit on ID training data and need the model's
penultimate features: robustkit's models expose ``model.features(x)`` and ``model.head``
(the last linear layer); for another model pass ``features=callable`` (and, for ViM,
``head=nn.Linear``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from ..attacks.base import require
from ..checks import model_device, preserved_state
from .base import Data, Detector, as_tensors


class _LogitDetector(Detector):
    pood_name: ClassVar[str]

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        self.detector = getattr(pood, self.pood_name)(None, **self.params)

    @torch.no_grad()
    def _score(self, x):
        return self.detector.predict_logits(self._module()(x))


class MaxLogit(_LogitDetector):
    """−max logit (pytorch_ood.detector.MaxLogit)."""

    name = "max_logit"
    pood_name = "MaxLogit"


class MaxSoftmax(_LogitDetector):
    """−max softmax probability at temperature ``t`` (pytorch_ood.detector.MaxSoftmax)."""

    name = "max_softmax"
    pood_name = "MaxSoftmax"


class Energy(_LogitDetector):
    """−T·logsumexp(logits/T) (pytorch_ood.detector.EnergyBased)."""

    name = "energy"
    pood_name = "EnergyBased"


class Entropy(_LogitDetector):
    """Entropy of the softmax (pytorch_ood.detector.Entropy)."""

    name = "entropy"
    pood_name = "Entropy"


class ODIN(Detector):
    """ODIN: temperature scaling plus an input perturbation (pytorch_ood.detector.ODIN)."""

    name = "odin"

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        params = {"eps": 0.0014, "temperature": 1000.0, **self.params}
        self.detector = pood.ODIN(self._module(), **params)

    def _score(self, x):
        with torch.enable_grad():
            return self.detector.predict(x)


class _FeatureDetector(Detector):
    """Fits a pytorch-ood features detector on the model's penultimate features."""

    needs_data = True
    pood_name: ClassVar[str]

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor] | None = None, **params: Any):
        super().__init__(**params)
        self.features = features

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.features is not None:
            return self.features(x)
        model = self._module()
        if not hasattr(model, "features"):
            raise TypeError(
                f"detector {self.name!r} needs penultimate features: the model has no .features(x); "
                "pass features=callable when constructing the detector"
            )
        return model.features(x)

    def _make(self, pood: Any) -> Any:
        return getattr(pood, self.pood_name)(None, **self.params)

    def _fit(self, data: Data | None, batch_size: int) -> None:
        pood = require("pytorch_ood.detector")
        x, y = as_tensors(data)
        model = self._module()
        device = model_device(model)
        with preserved_state(model), torch.no_grad():
            model.eval()
            z = torch.cat([self._encode(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)])
        self.detector = self._make(pood)
        self.detector.fit_features(z, y.to(device))
        self._fitted = True

    def is_fitted(self) -> bool:
        return getattr(self, "_fitted", False)

    @torch.no_grad()
    def _score(self, x):
        return self.detector.predict_features(self._encode(x))


class Mahalanobis(_FeatureDetector):
    """Class-conditional Gaussians with a shared covariance (pytorch_ood.detector.Mahalanobis)."""

    name = "mahalanobis"
    pood_name = "Mahalanobis"


class KNN(_FeatureDetector):
    """Distance to the k-th nearest ID training feature (pytorch_ood.detector.KNN)."""

    name = "knn"
    pood_name = "KNN"

    def __init__(self, features=None, k: int = 10, **params):
        super().__init__(features, k=k, **params)


class ViM(_FeatureDetector):
    """Virtual-logit matching (pytorch_ood.detector.ViM); uses the model's last linear layer."""

    name = "vim"
    pood_name = "ViM"

    def __init__(self, features=None, head: nn.Linear | None = None, d: int | None = None, **params):
        super().__init__(features, **params)
        self.head, self.d = head, d

    def _make(self, pood):
        head = self.head or getattr(self._module(), "head", None)
        if not isinstance(head, nn.Linear):
            raise TypeError("vim needs the model's last linear layer: pass head=nn.Linear or use a robustkit model")
        d = self.d or max(1, min(head.in_features // 2, head.in_features - 1))
        return pood.ViM(None, d=d, w=head.weight.detach(), b=head.bias.detach())
