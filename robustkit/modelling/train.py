"""One training loop (plain, adversarial, distillation, reconstruction) and a model cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import model_device, resolve_device
from ..core.errors import CheckpointError
from ..core.stages import stage
from .batches import slices
from .checkpoint import load_checkpoint, save_checkpoint
from .data import ImageSet
from .models import build_model, model_spec

log = logging.getLogger(__name__)

BatchHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``hook(model, x, y) -> (x, y)``, called on every training batch with the current weights."""
EpochHook = Callable[[nn.Module, int], dict[str, float]]
"""``hook(model, epoch) -> metrics``, called after every epoch; its numbers go in the history."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run produces (and so the cache key)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    """L2 penalty: coupled (added to the gradient) for adam and sgd, decoupled for adamw."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    schedule: Literal["constant", "onecycle", "cosine"] = "constant"
    """Learning rate over the run, stepped every batch: constant, one-cycle (warm-up to ``lr``
    in the first 30%, then cosine annealing; Smith & Topin 2019) or cosine annealing to 0."""
    patience: int | None = None
    """Stop after this many epochs without validation improvement (``None``: never)."""
    val_fraction: float = 0.1
    augment: bool = False
    """Random crop (pad 4) and horizontal flip, for natural images."""
    temperature: float = 1.0
    """Softmax temperature of the loss (defensive distillation trains at T > 1); see `fit`."""
    objective: Literal["classify", "reconstruct"] = "classify"
    noise: float = 0.0
    """Reconstruction only: std of Gaussian noise added to the inputs, the target staying
    clean (a denoising autoencoder; 0: plain reconstruction)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be ≥ 1")
        if not self.lr > 0 or self.temperature <= 0:
            raise ValueError(f"lr ({self.lr}) and temperature ({self.temperature}) must be > 0")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: adam, adamw, sgd")
        if self.schedule not in ("constant", "onecycle", "cosine"):
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: constant, onecycle, cosine")
        if self.weight_decay < 0 or self.noise < 0:
            raise ValueError(f"weight_decay ({self.weight_decay}) and noise ({self.noise}) must be ≥ 0")
        if self.objective not in ("classify", "reconstruct"):
            raise ValueError(f"unknown objective {self.objective!r}; valid: classify, reconstruct")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction} must lie in (0, 1)")


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per-image random crop after zero padding, and random horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


def _loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch loss (unscaled: cross-entropy at T, or MSE) and the number of correct
    predictions (a tensor: no sync per batch). ``target`` replaces ``x`` as the
    reconstruction target (the clean images of a denoising autoencoder)."""
    out = model(x)
    if config.objective == "reconstruct":
        return F.mse_loss(out, x if target is None else target), torch.zeros((), dtype=torch.int64)
    loss = F.cross_entropy(out / config.temperature, y)
    hard = y if y.ndim == 1 else y.argmax(1)
    return loss, (out.argmax(1) == hard).sum()


@torch.no_grad()
def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> float:
    """Validation score, higher is better: accuracy, or minus the reconstruction MSE."""
    model.eval()
    total, correct = 0.0, 0
    for s in slices(len(x), 512):
        loss, hits = _loss(model, x[s], y[s], config)
        total += float(loss) * len(x[s])
        correct += int(hits)
    model.train()
    return -total / len(x) if config.objective == "reconstruct" else correct / len(x)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    batch_hook: BatchHook | None = None,
    epoch_hook: EpochHook | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``(x, y)``; ``y`` holds class indices or soft labels (N×C).

    Returns the history, one dict per epoch. With ``config.patience`` the best weights on a
    held-out split are restored at the end.

    At temperature T the loss is the cross-entropy of z/T. Its gradients are T (hard labels)
    to T² (soft labels) times smaller than at T = 1, and z must grow T-fold to reach the same
    confidence, which Adam, moving each weight by about the learning rate per step, does
    slowly. A model with a linear ``head`` (every robustkit classifier) therefore trains its
    head with T× the learning rate and a weight decay scaled to match (`head_scaling`); with
    the head initialised T× larger (`train_model` does that) the optimisation of z/T is then
    the optimisation of z at T = 1, step for step, and the trained logits are T× larger.
    Other models get the loss multiplied by T² (Hinton et al. 2015), so that at least a
    coupled weight decay cannot outweigh the data term. The history records the unscaled loss.
    """
    from rich.progress import Progress

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = model_device(model)
    x_val = y_val = None
    if config.patience is not None:
        order = torch.randperm(len(x), generator=generator)
        n_val = max(1, int(len(x) * config.val_fraction))
        x_val, y_val = x[order[:n_val]].to(device), y[order[:n_val]].to(device)
        x, y = x[order[n_val:]], y[order[n_val:]]
    optimizer = make_optimizer(model, config)
    batches = (len(x) + config.batch_size - 1) // config.batch_size
    scheduler = make_scheduler(optimizer, config, config.epochs * batches)
    hot = config.objective == "classify" and config.temperature != 1
    scale = config.temperature**2 if hot and temperature_head(model) is None else 1.0
    history: list[dict[str, float]] = []
    best_score, best_state, stale = float("-inf"), None, 0
    model.train()
    arch = getattr(model, "robustkit_spec", {}).get("arch") or type(model).__name__
    defense = getattr(getattr(batch_hook, "__self__", None), "name", None)  # adversarial_training, gaussian_augmentation
    name = f"training {arch}" + (f" ({defense})" if defense else "")
    plan = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''} of {len(x)} images"
    with Progress(transient=True, disable=not progress) as bar, stage(name, config.epochs * len(x), note=plan) as st:
        task = bar.add_task("training", total=config.epochs * batches)
        for epoch in range(config.epochs):
            order = torch.randperm(len(x), generator=generator)
            loss_sum, hits = torch.zeros(()), torch.zeros((), dtype=torch.int64)
            for b in range(batches):
                index = order[b * config.batch_size : (b + 1) * config.batch_size]
                xb, yb = x[index], y[index]
                if config.augment:
                    xb = augment_batch(xb, generator)
                xb, yb = xb.to(device), yb.to(device)
                if batch_hook is not None:
                    xb, yb = batch_hook(model, xb, yb)
                clean = None
                if config.objective == "reconstruct" and config.noise > 0:
                    noise = torch.randn(xb.shape, generator=generator).to(device)
                    clean, xb = xb, (xb + config.noise * noise).clamp(0, 1)
                loss, batch_hits = _loss(model, xb, yb, config, clean)
                optimizer.zero_grad(set_to_none=True)
                (loss * scale).backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                loss_sum += loss.detach().cpu() * len(index)
                hits += batch_hits.cpu()
                st.advance(len(index))
                if progress:
                    bar.update(task, advance=1, description=f"epoch {epoch + 1}/{config.epochs}")
            record: dict[str, float] = {"epoch": epoch + 1, "loss": float(loss_sum) / len(x)}
            if config.objective == "classify":
                record["train_accuracy"] = int(hits) / len(x)
            if epoch_hook is not None:
                record.update(epoch_hook(model, epoch + 1))
                model.train()
            if x_val is not None:
                score = _validate(model, x_val, y_val, config)
                record["val_score"] = score
                if score > best_score:
                    best_score, stale = score, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
            history.append(record)
            st.lap(f"epoch {epoch + 1}/{config.epochs}", ", ".join(f"{k} {v:.3g}" for k, v in record.items() if k != "epoch"))
            if config.patience is not None and stale > config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return history


def temperature_head(model: nn.Module) -> nn.Linear | None:
    """The last layer that training at a temperature rescales: a classifier's ``head``, if linear."""
    head = getattr(model, "head", None)
    return head if isinstance(head, nn.Linear) else None


def head_scaling(optimizer: str, temperature: float) -> tuple[float, float]:
    """(learning-rate factor, weight-decay factor) for the head W = T·V at temperature T, such
    that each step changes V exactly as the optimizer changes the head at T = 1 (Adam is
    invariant to a gradient's scale, SGD is not; AdamW decays by lr·wd, Adam adds wd·W to the gradient)."""
    t = temperature
    return {"adam": (t, 1 / t**2), "adamw": (t, 1 / t), "sgd": (t**2, 1 / t**2)}[optimizer]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer a config names, over all of ``model``'s parameters (the head in its own
    group at a temperature other than 1: `head_scaling`)."""
    head = temperature_head(model) if config.objective == "classify" and config.temperature != 1 else None
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    if head is not None:
        lr_factor, wd_factor = head_scaling(config.optimizer, config.temperature)
        in_head = {id(p) for p in head.parameters()}
        groups = [
            {"params": [p for p in model.parameters() if id(p) not in in_head]},
            {"params": list(head.parameters()), "lr": config.lr * lr_factor,
             "weight_decay": config.weight_decay * wd_factor},
        ]  # fmt: skip
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    """The per-batch learning-rate schedule a config names (``None`` for a constant rate); each
    parameter group follows it from its own learning rate."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=max(2, total_steps),
            pct_start=0.3,
            cycle_momentum=False,
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    return None


def cache_root() -> Path:
    """Where trained models are cached: ``$ROBUSTKIT_CACHE`` or ``~/.cache/robustkit/models``."""
    return Path(os.environ.get("ROBUSTKIT_CACHE", Path.home() / ".cache" / "robustkit" / "models"))


def cache_key(spec: dict[str, Any], data: ImageSet, config: TrainConfig, extra: dict | None = None) -> str:
    """Hash of everything that decides a trained model: architecture, data, config, seed, extras."""
    parts = {
        "spec": spec,
        "data": {"name": data.info.name, "split": data.split, "n": len(data), "hash": data.fingerprint()},
        "config": dataclasses.asdict(config),
        "extra": extra or {},
        "format": 1,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_model(
    spec: dict[str, Any],
    data: ImageSet,
    config: TrainConfig,
    *,
    targets: torch.Tensor | None = None,
    batch_hook: BatchHook | None = None,
    epoch_hook: EpochHook | None = None,
    key_extra: dict | None = None,
    cache: bool | str | Path = True,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build and train the model ``spec`` describes, or load it from the cache.

    ``targets`` replaces ``data.y`` (soft labels for distillation); ``key_extra`` must
    describe anything else that changes the result (a hook's attack, a teacher).
    Returns ``(model in eval mode, metadata)``; metadata holds the history and cache path.
    """
    device = resolve_device(device)
    extra = dict(key_extra or {})
    if config.objective == "classify" and config.temperature != 1:
        extra["temperature_training"] = "head scaled by T"  # how T is trained, since this changed
    if targets is not None:
        extra["targets"] = hashlib.blake2b(targets.numpy().tobytes(), digest_size=8).hexdigest()
    key = cache_key(spec, data, config, extra)
    path = None
    if cache:
        root = cache_root() if cache is True else Path(cache)
        path = root / f"{spec['arch']}-{data.info.name.split(':')[0]}-{key}.pt"
        if path.exists():
            try:
                model, meta = load_checkpoint(path, map_location=device)
                log.debug("%s: trained before, loaded from the model cache (%s)", spec["arch"], path)
                return model, {**meta, "cache": str(path), "cached": True}
            except CheckpointError as err:
                log.warning("ignoring a broken cache entry, retraining: %s", err)
    with torch.random.fork_rng(devices=[]):  # initial weights depend on the seed alone, like the cache key
        torch.manual_seed(config.seed)
        model = build_model(spec).to(device)
    head = temperature_head(model) if config.objective == "classify" and config.temperature != 1 else None
    if head is not None:  # z/T starts where z starts at T = 1 (see fit)
        with torch.no_grad():
            head.weight.mul_(config.temperature)
            head.bias.mul_(config.temperature)
    labels = data.y if targets is None else targets
    history = fit(model, data.x, labels, config, batch_hook, epoch_hook, progress)
    meta = {"key": key, "train": dataclasses.asdict(config), "history": history, "extra": extra}
    if path is not None:
        save_checkpoint(path, model, spec, meta)
    return model, {**meta, "cache": None if path is None else str(path), "cached": False}


def train_autoencoder(
    data: ImageSet,
    config: TrainConfig | None = None,
    cache: bool | str | Path = True,
    arch: str = "autoencoder",
    device: str | torch.device = "auto",
    progress: bool = False,
) -> nn.Module:
    """A reconstruction model trained on ``data`` (or loaded from the cache).

    ``arch`` is ``autoencoder`` (robustkit's ConvAutoencoder, for reconstruction-error
    scores) or ``denoiser`` (a residual denoising autoencoder, for purification; trained on
    inputs with Gaussian noise of std ``config.noise``). Default config: 20 epochs, batch
    128, and for the denoiser noise 0.1.
    """
    if config is None:
        config = TrainConfig(epochs=20, batch_size=128, objective="reconstruct", noise=0.1 if arch == "denoiser" else 0.0)
    if config.objective != "reconstruct":
        config = dataclasses.replace(config, objective="reconstruct")
    autoencoder, _ = train_model(
        model_spec(arch, data.info), data, config, cache=cache, device=device, progress=progress
    )
    return autoencoder
