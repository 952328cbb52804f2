"""The Detector protocol: ``fit(model, data)`` then ``score(x)``; higher = more suspicious."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checks import check_images, model_device, preserved_state, probe
from ..errors import NotFittedError

Data = Any  # an ImageSet, a DataLoader of (x, y), or a tuple (x, y)


def as_tensors(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn an ImageSet, a DataLoader or an ``(x, y)`` pair into two tensors."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, DataLoader):
        xs, ys = zip(*[(b[0], b[1]) for b in data], strict=True)
        return torch.cat(xs), torch.cat(ys)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"expected an ImageSet, a DataLoader or an (x, y) pair, got {type(data).__name__}")


class Detector(ABC):
    """Scores inputs; higher means more likely OOD (or adversarial).

    Detectors that learn nothing still take the model in ``fit``; scoring before ``fit``
    raises `NotFittedError`.
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False  # whether fit() uses training data

    def __init__(self, **params: Any):
        self.params = params
        self.model: nn.Module | None = None

    def fit(self, model: nn.Module | None, data: Data | None = None, batch_size: int = 512) -> Detector:
        """Attach the model and learn what the detector needs from ID training ``data``."""
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if self.needs_data and data is None:
            raise ValueError(f"detector {self.name!r} learns from ID training data: call fit(model, train_data)")
        self.model = model
        self._fit(data, batch_size)
        return self

    def _fit(self, data: Data | None, batch_size: int) -> None:
        """Learn from data (nothing by default)."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Outlier scores of shape (N,), on the CPU; higher = more suspicious."""
        if not self.is_fitted():
            raise NotFittedError(f"detector {self.name!r} has not been fitted: call .fit(model, train_data) first")
        check_images(x)
        module = self._module()
        probe(module, x)
        with preserved_state(module):
            module.eval()
            return self._score(x.to(model_device(module))).detach().float().cpu()

    def score_batches(self, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """`score` over ``x`` in batches, as a numpy array."""
        return torch.cat([self.score(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()

    def is_fitted(self) -> bool:
        return self.model is not None

    def _module(self) -> nn.Module:
        assert self.model is not None
        return self.model

    @abstractmethod
    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores for validated inputs on the model's device."""
