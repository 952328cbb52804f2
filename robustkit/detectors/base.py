"""The Detector protocol: ``fit(model, data)`` then ``score(x)``; higher = more suspicious."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..core.checks import check_images, image_digests, model_device, preserved_state, shape_errors
from ..core.errors import NotFittedError
from ..core.params import Configurable
from ..modelling.batches import image_batches, labelled_batches
from ..modelling.data import Data

FIT_DIGESTS = 200_000  # fit images whose hashes a detector keeps, for fit_overlap (8 bytes and a set slot each)
FIT_PEAKS = 512  # fit images whose brightest pixel it keeps, for input_range


@dataclass
class FitData:
    """What a detector remembers of the ID data it was fitted on, for the checks that compare it with the
    data it scores: ``images`` seen, the hashes of the first `FIT_DIGESTS` (`image_digests`) and the
    brightest pixel of the first `FIT_PEAKS`."""

    images: int = 0
    digests: set[bytes] = field(default_factory=set)
    peaks: list[float] = field(default_factory=list)

    def add(self, x: torch.Tensor) -> None:
        room = FIT_DIGESTS - len(self.digests)
        if room > 0:
            self.digests.update(image_digests(x[:room]))
        if len(self.peaks) < FIT_PEAKS:
            self.peaks += x[: FIT_PEAKS - len(self.peaks)].flatten(1).amax(1).tolist()
        self.images += len(x)


class Detector(Configurable):
    """Scores inputs; higher means more likely OOD (or adversarial).

    Detectors that learn nothing still take the model in ``fit``; scoring before ``fit``
    raises `NotFittedError`. Subclasses implement ``_fit`` (optional) and ``_score``.
    """

    kind = "detector"
    needs_data: ClassVar[bool] = False  # whether fit() learns from ID training data

    def reads(self) -> str | None:
        """``"logits"`` or ``"features"`` when the score is a function of the model's output
        alone, so several detectors can share one forward pass (`score_outputs`); ``None``
        when the detector needs its own pass (input perturbations, another network)."""
        return None

    def score_outputs(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Scores from one shared forward pass: the model's logits and penultimate features."""
        raise NotImplementedError(f"detector {self.name!r} needs its own forward pass")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.model: nn.Module | None = None
        self._fitted = False
        self.fit_data = FitData()

    def fit(self, model: nn.Module | None, data: Data | None = None, batch_size: int = 512) -> Detector:
        """Attach the model and learn what the detector needs from ID training ``data``."""
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if self._needs_data() and data is None:
            raise ValueError(f"detector {self.name!r} learns from ID training data: call fit(model, train_data)")
        self.model, self._fitted = model, False
        self.fit_data = FitData()  # filled by fit_batches as the detector reads its fit data
        self._fit(data, batch_size)
        self._fitted = True
        return self

    def fit_batches(self, data: Data, batch_size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The fit data as checked ``(images, labels)`` batches, one in memory at a time; a detector that
        learns from them remembers them in ``fit_data`` (for the fit_overlap and input_range checks)."""
        for xb, yb in labelled_batches(data, None, batch_size):
            check_images(xb, "the fit data's images")
            if self._needs_data():
                self.fit_data.add(xb)
            yield xb, yb

    def _needs_data(self) -> bool:
        return self.needs_data

    def _fit(self, data: Data | None, batch_size: int) -> None:
        """Learn from ID data (nothing by default); stream it with `fit_batches`."""

    def is_fitted(self) -> bool:
        return self._fitted

    def score(self, x: Any, batch_size: int = 512) -> torch.Tensor:
        """Outlier scores of shape (N,), on the CPU; higher = more suspicious.

        ``x`` is a tensor of images, an ImageSet or a Dataset/DataLoader (labels ignored),
        scored ``batch_size`` images at a time.
        """
        if not self._fitted:
            raise NotFittedError(f"detector {self.name!r} has not been fitted: call .fit(model, train_data) first")
        module = self._module()
        scores = []
        for xb in image_batches(x, batch_size):
            check_images(xb)
            with preserved_state(module), shape_errors(module, xb):
                module.eval()
                scores.append(self._score(xb.to(model_device(module))).detach().float().cpu())
        if not scores:
            raise ValueError("no images to score; pass at least one image")
        return torch.cat(scores)

    def score_batches(self, x: Any, batch_size: int = 512) -> np.ndarray:
        """`score` as a numpy array."""
        return self.score(x, batch_size).numpy()

    def _module(self) -> nn.Module:
        """The network ``score`` runs (the classifier by default)."""
        if self.model is None:
            raise ValueError(f"detector {self.name!r} needs a model: call fit(model, ...)")
        return self.model

    @abstractmethod
    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores for validated inputs on the model's device."""
