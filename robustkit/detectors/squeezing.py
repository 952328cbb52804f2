"""Feature squeezing as an adversarial-input detector (Xu et al. 2018, seed 002)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..squeezers import squeezer
from .base import Detector


class FeatureSqueezing(Detector):
    """Score = max over squeezers of ‖softmax(f(x)) − softmax(f(squeeze(x)))‖₁.

    ``flag(x)`` marks inputs above ``threshold`` (default 1.0, as in seed 002) as adversarial.
    """

    name = "feature_squeezing"

    def __init__(
        self,
        squeezers: Sequence[str] = ("bit_depth:4", "median_filter:2", "resample:2"),
        threshold: float = 1.0,
    ):
        super().__init__()
        if not squeezers:
            raise ValueError("feature squeezing needs at least one squeezer")
        self.squeezer_names = list(squeezers)
        self.squeezers = [squeezer(s) for s in squeezers]
        self.threshold = float(threshold)

    @torch.no_grad()
    def _score(self, x):
        model = self._module()
        p = model(x).softmax(dim=1)
        dists = [(p - model(sq(x)).softmax(dim=1)).abs().sum(dim=1) for sq in self.squeezers]
        return torch.stack(dists).max(dim=0).values

    def flag(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean (N,): True where the score exceeds the threshold."""
        return self.score(x) > self.threshold
