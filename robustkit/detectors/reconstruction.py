"""Our autoencoder scorer: per-image reconstruction MSE (higher = more likely OOD)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.checks import check_images
from ..core.papers import SAKURADA_2014
from ..core.params import Param, component
from ..modelling.data import as_image_set
from ..modelling.train import TrainConfig, train_autoencoder
from .base import Detector

CACHE = Param("cache", True, "model cache: True (default folder), False (no cache) or a folder", types=(bool, str, Path))
TRAIN_CONFIG = component("train_config", (TrainConfig,), "training settings; None: the defense's defaults")


def reconstruction_mse(autoencoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error between each image and its reconstruction, shape (N,)."""
    return (autoencoder(x) - x).pow(2).flatten(1).mean(dim=1)


class ReconstructionError(Detector):
    """Scores an image by how badly an autoencoder trained on ID data reconstructs it.

    Pass ``autoencoder=`` to use a trained one; otherwise ``fit(None, train_data)`` trains
    (or loads from the cache) robustkit's ConvAutoencoder on the ID data.
    """

    name = "reconstruction"
    parameters = (
        component("autoencoder", (nn.Module,), "a trained autoencoder; None: train robustkit's on the fit data"),
        TRAIN_CONFIG,
        CACHE,
    )
    paper = SAKURADA_2014

    def __init__(self, **params):
        super().__init__(**params)
        self.autoencoder: nn.Module | None = self.params["autoencoder"]

    def _needs_data(self) -> bool:
        return self.params["autoencoder"] is None

    def fit(self, model=None, data=None, batch_size=512):
        """Use the given autoencoder, or train one on the ID training ``data`` (``model`` is not used)."""
        return super().fit(model, data, batch_size)

    def _fit(self, data, batch_size):
        if self.params["autoencoder"] is not None:
            return
        train = as_image_set(data)  # the training loop keeps its data in memory
        check_images(train.x, "the fit data's images")
        self.fit_data.add(train.x)
        self.autoencoder = train_autoencoder(train, self.params["train_config"], self.params["cache"])

    def _module(self) -> nn.Module:
        assert self.autoencoder is not None
        return self.autoencoder

    @torch.no_grad()
    def _score(self, x):
        return reconstruction_mse(self._module(), x)
