"""Preprocessing defenses as model wrappers: squeezers and autoencoder purification.

A wrapped model is attacked *obliviously* by attacking the bare classifier and testing the
wrapper, or *adaptively* by attacking the wrapper itself: non-differentiable squeezers pass
gradients straight through (BPDA with the identity), the autoencoder is differentiated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from ..core.checks import model_device
from ..core.papers import MENG_2017, XU_2018
from ..core.params import Param, component, flag
from ..modelling.squeezers import bit_depth, median_filter, resample
from ..modelling.train import TrainConfig, train_autoencoder
from .base import CACHE, PROGRESS, TRAIN_CONFIG, Defense


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

    @property
    def surrogate_gradient(self) -> bool:
        """Whether the backward pass is a deliberate approximation (BPDA), not the forward's gradient.

        Sanity checks that compare the gradient with the forward pass (`gradient_consistency`)
        skip such a model; set the same attribute on your own BPDA module."""
        return self.straight_through

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        if not self.straight_through:
            return self.preprocess(x)
        with torch.no_grad():
            squeezed = self.preprocess(x.detach())
        return x + (squeezed - x).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.purify(x))


class _Squeeze(Defense):
    """Squeeze every input before classifying (gradients pass straight through: BPDA)."""

    paper = XU_2018

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _apply(self, model, data):
        return PreprocessedModel(self.squeeze, model, straight_through=True)


class BitDepth(_Squeeze):
    """Reduce every pixel to ``2**bits`` levels before classifying."""

    name = "bit_depth"
    parameters = (Param("bits", 4, "bits per pixel kept", types=(int,), low=1, high=8),)

    def squeeze(self, x):
        return bit_depth(x, self.params["bits"])


class MedianFilter(_Squeeze):
    """Median-filter the input (window ``size``) before classifying."""

    name = "median_filter"
    parameters = (Param("size", 2, "median window side in pixels", types=(int,), low=1),)

    def squeeze(self, x):
        return median_filter(x, self.params["size"])


class Resample(_Squeeze):
    """Down- then up-scale the input by ``factor`` before classifying."""

    name = "resample"
    parameters = (Param("factor", 2, "downscaling factor", types=(int,), low=1),)

    def squeeze(self, x):
        return resample(x, self.params["factor"])


class AutoencoderPurification(Defense):
    """Classify the autoencoder's reconstruction of the input (MagNet's reformer).

    Pass ``autoencoder=`` or let ``apply(model, train_data)`` train (or load from the
    cache) one of robustkit's on clean training data: by default the residual denoiser
    (``arch="denoiser"``, trained on noisy inputs against clean targets, which keeps clean
    accuracy), or the bottleneck ``autoencoder``. ``straight_through`` makes gradients skip
    the autoencoder (BPDA with the identity) instead of differentiating through it.
    """

    name = "ae_purification"
    parameters = (
        component("autoencoder", (nn.Module,), "a trained autoencoder; None: train robustkit's on the data"),
        Param("arch", "denoiser", "architecture trained when no autoencoder is given", types=(str,),
              choices=("denoiser", "autoencoder")),
        Param("noise", 0.1, "std of the Gaussian input noise the denoiser is trained to remove", low=0),
        flag("straight_through", False, "backward pass treats the autoencoder as the identity (BPDA)"),
        TRAIN_CONFIG,
        CACHE,
        PROGRESS,
    )  # fmt: skip
    paper = MENG_2017

    def _apply(self, model, data):
        p = self.params
        autoencoder = p["autoencoder"]
        if autoencoder is None:
            if data is None:
                raise ValueError("ae_purification needs autoencoder= or training data to train one: apply(model, data)")
            config = p["train_config"] or TrainConfig(epochs=20, batch_size=128, objective="reconstruct")
            noise = p["noise"] if p["arch"] == "denoiser" else 0.0
            config = dataclasses.replace(config, objective="reconstruct", noise=noise)
            autoencoder = train_autoencoder(
                data, config, p["cache"], arch=p["arch"], device=model_device(model), progress=p["progress"]
            )
        self.autoencoder = autoencoder.eval()
        return PreprocessedModel(self.autoencoder, model, straight_through=p["straight_through"])
