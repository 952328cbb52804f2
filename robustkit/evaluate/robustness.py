"""Accuracy, attacks over a dataset, eps sweeps, minimal budgets and cross-backend agreement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks.base import Attack, attack_batches
from ..attacks.reference import gradient_sign_and_logits
from ..core.checks import check_images, check_labels, inspect_model, model_device, parse_eps, preserved_state, probe
from ..modelling.batches import map_batches, slices
from ..registry import ATTACKS, attack_class


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes of ``x`` (eval mode; the model's state is restored)."""
    check_images(x)
    probe(model, x)
    return _predict(model, x, batch_size)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """`predict` without input checks, for inputs already validated."""
    with preserved_state(model):
        model.eval()
        return map_batches(lambda b: model(b).argmax(1), x, batch_size, model_device(model))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of ``x`` the model classifies as ``y``."""
    check_images(x)
    check_labels(y, len(x), inspect_model(model, x))
    return _rate(_predict(model, x, batch_size) == y.cpu())


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
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
    eval_model: nn.Module | None = None,
) -> dict[str, float]:
    """Accuracy under ``attack`` (and, when targeted, the rate of reaching the target).

    ``eval_model`` (default: ``model``) classifies the adversarial images: pass a defended
    model here and its bare classifier as ``model`` for an oblivious evaluation.
    """
    adv = attack_batches(attack, model, x, y, target, batch_size)
    preds = predict(eval_model or model, adv)
    out = {"accuracy": _rate(preds == y.cpu())}
    if target is not None:
        out["target_rate"] = _rate(preds == target.cpu())
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
    x: torch.Tensor,
    y: torch.Tensor,
    eps_values: Sequence[float | str],
    target: torch.Tensor | None = None,
    batch_size: int = 256,
) -> Sweep:
    """Accuracy under ``attack`` at each eps.

    FGSM (from any backend: they agree exactly, see `agreement`) reuses one gradient per
    batch, whose forward pass also gives the clean predictions: one forward and one
    backward, then one forward per nonzero eps. Every other attack runs once per eps.
    """
    eps_list = [parse_eps(e) for e in eps_values]
    check_images(x)
    num_classes = inspect_model(model, x)
    check_labels(y, len(x), num_classes)
    if target is not None:
        check_labels(target, len(x), num_classes, "target")
    hits = np.zeros(len(eps_list))
    target_hits = np.zeros(len(eps_list))
    passes = {"forward": 0, "backward": 0}
    reuse_gradient = attack.name == "fgsm"
    for s in slices(len(x), batch_size):
        xb, yb = x[s], y[s]
        tb = None if target is None else target[s]
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
    n = len(x)
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


def minimal_budget(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    max_k: int = 64,
) -> Budget:
    """Smallest FGSM budget k/255 (k = 1, 2, …, max_k) that changes each prediction.

    Untargeted: until the prediction differs from ``y``. Targeted: until it equals
    ``target`` (x' = x − ε·sign ∇ₓL(x, target)). The gradient is computed once; each k
    costs one forward pass over the images not yet fooled.
    """
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
    x: torch.Tensor,
    y: torch.Tensor,
    backends: Sequence[str] | None = None,
    target: torch.Tensor | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Run attack ``name`` from each backend on the same batch and compare them.

    One row per backend: adversarial accuracy, max |Δx| and fraction of equal predictions
    against the first backend, mean perturbation norms.
    """
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
