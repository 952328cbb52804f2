"""Predicted classes and the share of hits: the two primitives every evaluation and check builds on."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.checks import check_images, model_device, preserved_state, probe
from ..modelling.batches import image_batches, map_batches


def predict(model: nn.Module, x: Any, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes of ``x`` (a tensor, or a Dataset/DataLoader; eval mode, state restored)."""
    preds = []
    for xb in image_batches(x, batch_size):
        check_images(xb)
        probe(model, xb)
        preds.append(_predict(model, xb, batch_size))
    if not preds:
        raise ValueError("the data is empty; pass at least one image")
    return torch.cat(preds)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """`predict` without input checks, for inputs already validated."""
    with preserved_state(model):
        model.eval()
        return map_batches(lambda b: model(b).argmax(1), x, batch_size, model_device(model))


def _rate(hits: torch.Tensor) -> float:
    """Fraction of True values, exact in float64."""
    return int(hits.sum()) / max(1, hits.numel())


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's outputs on ``x`` (eval mode, state restored), on the CPU."""
    with preserved_state(model):
        model.eval()
        return map_batches(model, x, batch_size, model_device(model)).cpu()
