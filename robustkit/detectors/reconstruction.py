"""Our autoencoder scorer: per-image reconstruction MSE (higher = more likely OOD)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Data, Detector


def reconstruction_mse(autoencoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error between each image and its reconstruction, shape (N,)."""
    return (autoencoder(x) - x).pow(2).flatten(1).mean(dim=1)


class ReconstructionError(Detector):
    """Scores an image by how badly an autoencoder trained on ID data reconstructs it.

    Pass ``autoencoder=`` to use a trained one; otherwise ``fit`` trains (or loads from the
    cache) robustkit's ConvAutoencoder on the ID data with ``train_config``.
    """

    name = "reconstruction"

    def __init__(self, autoencoder: nn.Module | None = None, train_config: Any = None, cache: Any = True):
        super().__init__()
        self.autoencoder = autoencoder
        self.train_config = train_config
        self.cache = cache

    def fit(self, model: nn.Module | None = None, data: Data | None = None, batch_size: int = 512):
        if self.autoencoder is None and data is None:
            raise ValueError("the reconstruction detector needs ID training data or autoencoder=")
        return super().fit(model, data, batch_size)

    def _fit(self, data, batch_size):
        if self.autoencoder is not None:
            return
        from ..data import ImageSet
        from ..models import model_spec
        from ..train import TrainConfig, train_model

        if not isinstance(data, ImageSet):
            raise TypeError("to train the autoencoder, pass the ID training data as an ImageSet")
        config = self.train_config or TrainConfig(epochs=20, batch_size=128, objective="reconstruct")
        self.autoencoder, _ = train_model(model_spec("autoencoder", data.info), data, config, cache=self.cache)

    def is_fitted(self) -> bool:
        return self.autoencoder is not None

    def _module(self) -> nn.Module:
        assert self.autoencoder is not None
        return self.autoencoder

    @torch.no_grad()
    def _score(self, x):
        return reconstruction_mse(self.autoencoder, x)
