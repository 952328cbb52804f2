"""Feature squeezing as an adversarial-input detector (Xu et al. 2018)."""

from __future__ import annotations

import torch

from ..core.papers import XU_2018
from ..core.params import Param, strings
from ..modelling.squeezers import squeezer
from .base import Detector


class FeatureSqueezing(Detector):
    """Score = max over squeezers of ‖softmax(f(x)) − softmax(f(squeeze(x)))‖₁.

    ``flag(x)`` marks inputs above ``threshold`` (default 1.0, as in the write-up) as adversarial.
    """

    name = "feature_squeezing"
    parameters = (
        strings("squeezers", ("bit_depth:4", "median_filter:2", "resample:2"), "squeezers, e.g. bit_depth:4,median_filter:2"),
        Param("threshold", 1.0, "L1 distance above which flag() calls an input adversarial", low=0),
    )
    paper = XU_2018

    def _check(self):
        if not self.params["squeezers"]:
            raise ValueError("feature_squeezing: squeezers is empty; name at least one, e.g. ('bit_depth:4',)")
        self.squeezers = [squeezer(s) for s in self.params["squeezers"]]

    @torch.no_grad()
    def _score(self, x):
        model = self._module()
        p = model(x).softmax(dim=1)
        dists = [(p - model(sq(x)).softmax(dim=1)).abs().sum(dim=1) for sq in self.squeezers]
        return torch.stack(dists).max(dim=0).values

    def flag(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean (N,): True where the score exceeds the threshold."""
        return self.score(x) > self.params["threshold"]
