"""The Detector protocol: ``fit(model, data)`` then ``score(x)``; higher = more suspicious."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..core.checks import check_images, model_device, preserved_state, probe
from ..core.errors import NotFittedError
from ..core.params import Configurable
from ..modelling.batches import map_batches
from ..modelling.data import Data, ImageSet, as_image_set


class Detector(Configurable):
    """Scores inputs; higher means more likely OOD (or adversarial).

    Detectors that learn nothing still take the model in ``fit``; scoring before ``fit``
    raises `NotFittedError`. Subclasses implement ``_fit`` (optional) and ``_score``.
    """

    kind = "detector"
    needs_data: ClassVar[bool] = False  # whether fit() learns from ID training data

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.model: nn.Module | None = None
        self._fitted = False

    def fit(self, model: nn.Module | None, data: Data | None = None, batch_size: int = 512) -> Detector:
        """Attach the model and learn what the detector needs from ID training ``data``."""
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if self._needs_data() and data is None:
            raise ValueError(f"detector {self.name!r} learns from ID training data: call fit(model, train_data)")
        train = None
        if data is not None:
            train = as_image_set(data)
            check_images(train.x, "the fit data's images")
        self.model, self._fitted = model, False
        self._fit(train, batch_size)
        self._fitted = True
        return self

    def _needs_data(self) -> bool:
        return self.needs_data

    def _fit(self, data: ImageSet | None, batch_size: int) -> None:
        """Learn from ID data (nothing by default)."""

    def is_fitted(self) -> bool:
        return self._fitted

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Outlier scores of shape (N,), on the CPU; higher = more suspicious."""
        if not self._fitted:
            raise NotFittedError(f"detector {self.name!r} has not been fitted: call .fit(model, train_data) first")
        check_images(x)
        module = self._module()
        probe(module, x)
        with preserved_state(module):
            module.eval()
            return self._score(x.to(model_device(module))).detach().float().cpu()

    def score_batches(self, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """`score` over ``x`` in batches, as a numpy array."""
        return map_batches(self.score, x, batch_size).numpy()

    def _module(self) -> nn.Module:
        """The network ``score`` runs (the classifier by default)."""
        if self.model is None:
            raise ValueError(f"detector {self.name!r} needs a model: call fit(model, ...)")
        return self.model

    @abstractmethod
    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores for validated inputs on the model's device."""
