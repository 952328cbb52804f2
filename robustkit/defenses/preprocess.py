"""Preprocessing defenses as model wrappers: squeezers and autoencoder purification.

A wrapped model is attacked *obliviously* by attacking the bare classifier and testing the
wrapper, or *adaptively* by attacking the wrapper itself: non-differentiable squeezers pass
gradients straight through (BPDA with the identity), the autoencoder is differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..squeezers import bit_depth, median_filter, resample
from .base import Defense


class PreprocessedModel(nn.Module):
    """``model(preprocess(x))``; with ``straight_through`` the backward pass treats
    ``preprocess`` as the identity (BPDA), so gradient attacks can target the whole."""

    def __init__(self, preprocess: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, straight_through: bool):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.straight_through = straight_through
        if isinstance(preprocess, nn.Module):
            self.purifier = preprocess

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        if not self.straight_through:
            return self.preprocess(x)
        with torch.no_grad():
            squeezed = self.preprocess(x.detach())
        return x + (squeezed - x).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.purify(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(self.purify(x))

    @property
    def head(self) -> nn.Module:
        return self.model.head


class _Squeeze(Defense):
    param: str
    default: int

    def __init__(self, **params: Any):
        unknown = set(params) - {self.param}
        if unknown:
            raise TypeError(f"{self.name} has no parameter {sorted(unknown)}; valid: {self.param}")
        self.value = int(params.get(self.param, self.default))
        if self.value < 1:
            raise ValueError(f"{self.name}: {self.param} must be a positive integer, got {self.value}")

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _apply(self, model, data):
        return PreprocessedModel(self.squeeze, model, straight_through=True)

    def config(self):
        return {"defense": self.name, self.param: self.value}


class BitDepth(_Squeeze):
    """Reduce every pixel to ``2**bits`` levels before classifying."""

    name, param, default = "bit_depth", "bits", 4

    def squeeze(self, x):
        return bit_depth(x, self.value)


class MedianFilter(_Squeeze):
    """Median-filter the input (window ``size``) before classifying."""

    name, param, default = "median_filter", "size", 2

    def squeeze(self, x):
        return median_filter(x, self.value)


class Resample(_Squeeze):
    """Down- then up-scale the input by ``factor`` before classifying."""

    name, param, default = "resample", "factor", 2

    def squeeze(self, x):
        return resample(x, self.value)


class AutoencoderPurification(Defense):
    """Classify the autoencoder's reconstruction of the input (seed 003).

    Pass ``autoencoder=`` or let ``apply(model, train_data)`` train (or load from the
    cache) robustkit's ConvAutoencoder on clean training data.
    """

    name = "ae_purification"

    def __init__(self, autoencoder: nn.Module | None = None, train_config: Any = None, cache: Any = True):
        self.autoencoder = autoencoder
        self.train_config = train_config
        self.cache = cache

    def _apply(self, model, data):
        if self.autoencoder is None:
            if data is None:
                raise ValueError("ae_purification needs an autoencoder= or training data to train one")
            from ..detectors.reconstruction import ReconstructionError

            detector = ReconstructionError(train_config=self.train_config, cache=self.cache).fit(None, data)
            self.autoencoder = detector.autoencoder
        self.autoencoder.eval()
        return PreprocessedModel(self.autoencoder, model, straight_through=False)

    def config(self):
        return {"defense": self.name, "train": repr(self.train_config)}
