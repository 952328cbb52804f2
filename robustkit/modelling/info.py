"""What a model needs to know about a data set, and the seeded sample every loader draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: classes, image shape, mean and std."""

    name: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def pick_indices(total: int, sample: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``sample`` of ``total`` items drawn with ``seed`` (all of them for
    ``None`` or ``sample`` ≥ ``total``)."""
    if sample is None or sample >= total:
        return np.arange(total)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ValueError(f"sample={sample!r} must be a positive number of images")
    return np.sort(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:sample].numpy())
