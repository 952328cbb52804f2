"""Accuracy, attacks over a dataset, eps sweeps, minimal budgets and cross-backend agreement."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks.base import Attack
from ..attacks.reference import gradient_sign_and_logits
from ..core.checks import check_images, check_labels, inspect_model, model_device, parse_eps, preserved_state, probe
from ..modelling.batches import image_batches, labelled_batches, map_batches
from ..modelling.data import as_image_set
from ..registry import ATTACKS, attack_class


def _checked_batches(
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None,
    batch_size: int,
    target: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Validated ``(images, labels, targets)`` batches from any data robustkit takes.

    The model's class count is probed once, on the first batch; one batch is in memory at a time.
    """
    if target is not None and not isinstance(x, torch.Tensor):
        raise TypeError("target= needs images as a tensor x (one target per row of x)")
    if target is not None and isinstance(x, torch.Tensor) and len(target) != len(x):
        raise ValueError(f"target has {len(target)} labels for {len(x)} images; pass one target per image")
    num_classes, offset = None, 0
    for xb, yb in labelled_batches(x, y, batch_size):
        check_images(xb)
        if num_classes is None:
            num_classes = inspect_model(model, xb)
        check_labels(yb, len(xb), num_classes)
        tb = None
        if target is not None:
            tb = target[offset : offset + len(xb)]
            check_labels(tb, len(xb), num_classes, name="target")
        offset += len(xb)
        yield xb, yb, tb
    if num_classes is None:
        raise ValueError("the data is empty; pass at least one image")


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


def accuracy(model: nn.Module, x: Any, y: torch.Tensor | None = None, batch_size: int = 512) -> float:
    """Fraction of the images the model classifies correctly.

    ``x`` is a tensor of images (with labels ``y``), an ImageSet, or a Dataset/DataLoader of
    ``(image, label)`` pairs, streamed in batches.
    """
    hits = total = 0
    for xb, yb, _ in _checked_batches(model, x, y, batch_size):
        hits += int((_predict(model, xb, batch_size) == yb.cpu()).sum())
        total += len(xb)
    return hits / total


def _rate(hits: torch.Tensor) -> float:
    """Fraction of True values, exact in float64."""
    return int(hits.sum()) / max(1, hits.numel())


def random_targets(y: torch.Tensor, num_classes: int, seed: int = 0) -> torch.Tensor:
    """A random class other than ``y`` for every label (for targeted attacks)."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y.cpu() + shift) % num_classes


def robust_accuracy(
    attack: Attack,
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
    eval_model: nn.Module | None = None,
) -> dict[str, float]:
    """Accuracy under ``attack`` (and, when targeted, the rate of reaching the target).

    ``x`` is a tensor (with ``y``), an ImageSet or a Dataset/DataLoader, streamed in batches:
    adversarial images are never all held at once. ``eval_model`` (default: ``model``)
    classifies the adversarial images: pass a defended model here and its bare classifier
    as ``model`` for an oblivious evaluation.
    """
    hits = target_hits = total = 0
    for xb, yb, tb in _checked_batches(model, x, y, batch_size, target):
        adv = attack(model, xb, yb, target=tb)
        preds = _predict(eval_model or model, adv)
        hits += int((preds == yb.cpu()).sum())
        if tb is not None:
            target_hits += int((preds == tb.cpu()).sum())
        total += len(xb)
    out = {"accuracy": hits / total}
    if target is not None:
        out["target_rate"] = target_hits / total
    return out


def _direction(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """FGSM direction (on x's device) and clean predictions (CPU), frozen model in eval mode."""
    device = model_device(model)
    with preserved_state(model):
        model.eval()
        t = None if target is None else target.to(device)
        sign, logits = gradient_sign_and_logits(model, x.to(device), y.to(device), t)
    return sign.to(x.device), logits.argmax(1).cpu()


@dataclass
class Sweep:
    """Accuracy (and targeted success) per eps; ``passes`` counts forward/backward passes."""

    eps: list[float]
    accuracy: list[float]
    target_rate: list[float] | None = None
    passes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "accuracy": self.accuracy, "target_rate": self.target_rate, "passes": self.passes}


def eps_sweep(
    attack: Attack,
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    eps_values: Sequence[float | str] | None = None,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
) -> Sweep:
    """Accuracy under ``attack`` at each eps.

    FGSM (from any backend: they agree exactly, see `agreement`) reuses one gradient per
    batch, whose forward pass also gives the clean predictions: one forward and one
    backward, then one forward per nonzero eps. Every other attack runs once per eps.
    """
    if eps_values is None or (isinstance(eps_values, torch.Tensor) and eps_values.dtype == torch.int64):
        raise TypeError("eps_sweep needs eps_values=[...]; with a Dataset or DataLoader pass it by keyword")
    eps_list = [parse_eps(e) for e in eps_values]
    hits = np.zeros(len(eps_list))
    target_hits = np.zeros(len(eps_list))
    passes = {"forward": 0, "backward": 0}
    reuse_gradient = attack.name == "fgsm"
    n = 0
    for xb, yb, tb in _checked_batches(model, x, y, batch_size, target):
        n += len(xb)
        direction, clean = _direction(model, xb, yb, tb) if reuse_gradient else (None, None)
        if direction is not None:
            passes["forward"] += 1
            passes["backward"] += 1
        for j, eps in enumerate(eps_list):
            if eps == 0 and clean is not None:
                preds = clean
            else:
                if eps == 0:
                    adv = xb
                elif direction is not None:
                    adv = (xb + eps * direction).clamp(0, 1)
                else:
                    adv = attack.with_params(eps=eps)(model, xb, yb, target=tb)
                preds = _predict(model, adv)
                passes["forward"] += 1
            hits[j] += int((preds == yb.cpu()).sum())
            if tb is not None:
                target_hits[j] += int((preds == tb.cpu()).sum())
    return Sweep(
        eps=eps_list,
        accuracy=(hits / n).tolist(),
        target_rate=(target_hits / n).tolist() if target is not None else None,
        passes=passes,
    )


@dataclass
class Budget:
    """Per image: the smallest k with FGSM at k/255 succeeding (``-1``: not within ``max_k``)."""

    k: torch.Tensor
    success: torch.Tensor
    trajectory: torch.Tensor  # N × max_k predictions, one column per budget tried
    x_adv: torch.Tensor  # the adversarial image at the budget found (at max_k on failure)
    passes: dict[str, int]


def _in_memory(x: Any, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors ``(x, y)`` for functions whose result is per image (data sets are loaded whole)."""
    if isinstance(x, torch.Tensor):
        if not isinstance(y, torch.Tensor):
            raise TypeError("labels are missing: pass y with a tensor x, or a Dataset/DataLoader of (image, label) pairs")
        return x, y
    if y is not None:
        raise TypeError(f"pass y only with a tensor x: a {type(x).__name__} carries its own labels")
    data = as_image_set(x)
    return data.x, data.y


def minimal_budget(
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    max_k: int = 64,
) -> Budget:
    """Smallest FGSM budget k/255 (k = 1, 2, …, max_k) that changes each prediction.

    Untargeted: until the prediction differs from ``y``. Targeted: until it equals
    ``target`` (x' = x − ε·sign ∇ₓL(x, target)). The gradient is computed once; each k
    costs one forward pass over the images not yet fooled. ``x`` may be a Dataset or
    DataLoader too (loaded whole: the result has one row per image).
    """
    x, y = _in_memory(x, y)
    check_images(x)
    num_classes = inspect_model(model, x)
    check_labels(y, len(x), num_classes)
    if target is not None:
        check_labels(target, len(x), num_classes, "target")
    if not isinstance(max_k, int) or not 1 <= max_k <= 255:
        raise ValueError(f"max_k={max_k!r} must be an integer in [1, 255]")
    direction, _ = _direction(model, x, y, target)
    passes = {"forward": 1, "backward": 1}
    n = len(x)
    k_found = torch.full((n,), -1, dtype=torch.int64)
    trajectory = torch.full((n, max_k), -1, dtype=torch.int64)
    x_adv = x.clone()
    active = torch.ones(n, dtype=torch.bool)
    for k in range(1, max_k + 1):
        idx = active.nonzero().flatten()
        if len(idx) == 0:
            break
        adv = (x[idx] + (k / 255.0) * direction[idx]).clamp(0, 1)
        preds = _predict(model, adv)
        passes["forward"] += 1
        trajectory[idx, k - 1] = preds
        done = preds != y[idx].cpu() if target is None else preds == target[idx].cpu()
        x_adv[idx] = adv
        k_found[idx[done]] = k
        active[idx[done]] = False
    return Budget(k_found, k_found > 0, trajectory, x_adv, passes)


def agreement(
    name: str,
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    backends: Sequence[str] | None = None,
    target: torch.Tensor | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Run attack ``name`` from each backend on the same batch and compare them.

    One row per backend: adversarial accuracy, max |Δx| and fraction of equal predictions
    against the first backend, mean perturbation norms.
    """
    x, y = _in_memory(x, y)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid names: {', '.join(ATTACKS)}")
    rows, first_adv, first_pred = [], None, None
    for backend in backends or list(ATTACKS[name]):
        adv = attack_class(name, backend)(**params)(model, x, y, target=target)
        preds = predict(model, adv)
        delta = (adv - x).flatten(1)
        row = {
            "backend": backend,
            "accuracy": _rate(preds == y.cpu()),
            "mean_linf": float(delta.abs().max(dim=1).values.mean()),
            "mean_l2": float(delta.norm(dim=1).mean()),
        }
        if first_adv is None:
            first_adv, first_pred = adv, preds
        row["max_abs_diff"] = float((adv - first_adv).abs().max())
        row["prediction_agreement"] = _rate(preds == first_pred)
        rows.append(row)
    return rows
