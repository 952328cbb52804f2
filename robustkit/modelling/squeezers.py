"""Input squeezers (Xu et al. 2018): bit-depth reduction, median filter, resampling.

Bit depth and median filter come from ART (FeatureSqueezing, SpatialSmoothing in
channels-first mode); ART's Resample is audio-only, so resampling is done here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from ..core.backends import require

Squeezer = Callable[[torch.Tensor], torch.Tensor]


def _art(preprocessor, x: torch.Tensor) -> torch.Tensor:
    out, _ = preprocessor(x.detach().cpu().numpy().astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device, dtype=x.dtype)


def bit_depth(x: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """Round every pixel to ``2**bits`` levels (ART FeatureSqueezing)."""
    require("art")
    from art.defences.preprocessor import FeatureSqueezing

    return _art(FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bits), x)


def median_filter(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Median over a ``size``×``size`` window per channel (ART SpatialSmoothing, channels first)."""
    require("art")
    from art.defences.preprocessor import SpatialSmoothing

    return _art(SpatialSmoothing(window_size=size, channels_first=True, clip_values=(0.0, 1.0)), x)


def resample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Downscale by ``factor`` (area average) and upscale back (bilinear)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, h // factor), max(1, w // factor)), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


SQUEEZERS: dict[str, tuple[Callable[..., torch.Tensor], str]] = {
    "bit_depth": (bit_depth, "bits"),
    "median_filter": (median_filter, "size"),
    "resample": (resample, "factor"),
}


def squeezer(spec: str) -> Squeezer:
    """Parse ``"bit_depth:4"``, ``"median_filter:2"`` or ``"resample:2"`` into a function."""
    name, _, arg = spec.partition(":")
    if name not in SQUEEZERS:
        raise ValueError(f"unknown squeezer {spec!r}; valid: {', '.join(f'{k}:N' for k in SQUEEZERS)}")
    fn, param = SQUEEZERS[name]
    if not arg:
        return fn
    if not arg.isdigit() or int(arg) < 1:
        raise ValueError(f"squeezer {spec!r}: {param} must be a positive integer")
    return partial(fn, **{param: int(arg)})


def default_squeezers(shape: tuple[int, ...]) -> tuple[str, ...]:
    """Squeezers that suit images of this C×H×W shape (Xu et al.: 1-bit + 2×2 median for MNIST).

    Tiny 8×8 images lose too much to filtering, so they get bit-depth reduction alone.
    """
    channels, side = shape[0], shape[-1]
    if side <= 16:
        return ("bit_depth:2",)
    if channels == 1:
        return ("bit_depth:1", "median_filter:2")
    return ("bit_depth:5", "median_filter:2", "resample:2")
