"""Training defenses: adversarial training (on the fly, every batch) and training on squeezed data."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack
from ..data import ImageSet
from ..train import TrainConfig, fit, train_model
from .base import Defense, fresh_copy, spec_of
from .preprocess import PreprocessedModel


class AdversarialTraining(Defense):
    """Train on adversarial examples made from the *current* weights at every batch.

    ``mix`` is the fraction of each batch replaced by its adversarial version; ``targeted``
    attacks a random other class (seed 000). With ``monitor`` (a held-out ImageSet) every
    epoch records clean, FGSM and PGD accuracy on it, and `catastrophic_overfitting`
    says whether PGD accuracy collapsed while FGSM accuracy did not (Wong et al. 2020).
    """

    name = "adversarial_training"
    needs_data = True

    def __init__(
        self,
        attack: Attack | None = None,
        mix: float = 0.5,
        targeted: bool = False,
        train_config: TrainConfig | None = None,
        monitor: ImageSet | None = None,
        cache: Any = True,
        progress: bool = True,
    ):
        from ..registry import attack as make_attack

        if attack is not None and not isinstance(attack, Attack):
            raise TypeError(f"attack must be a robustkit Attack (robustkit.attack(...)), got {type(attack).__name__}")
        if not 0 < mix <= 1:
            raise ValueError(f"mix={mix} must lie in (0, 1]: the fraction of each batch made adversarial")
        self.attack = (attack or make_attack("fgsm", eps=2 / 255)).with_params(seed=None)
        if targeted and not self.attack.targeted:
            raise ValueError(f"{self.attack.name} ({self.attack.backend}) has no targeted mode")
        self.mix, self.targeted = float(mix), bool(targeted)
        self.train_config = train_config or TrainConfig()
        self.monitor, self.cache, self.progress = monitor, cache, progress
        self.history: list[dict[str, float]] = []

    def batch_hook(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the first ``mix`` fraction of the batch by adversarial examples of the current model."""
        n_adv = max(1, round(self.mix * len(x)))
        target = None
        if self.targeted:
            num_classes = model.head.out_features if hasattr(model, "head") else int(y.max()) + 1
            shift = torch.randint(1, num_classes, (n_adv,), device=y.device)
            target = (y[:n_adv] + shift) % num_classes
        adv = self.attack(model, x[:n_adv], y[:n_adv], target=target)
        return torch.cat([adv, x[n_adv:]]), y

    def epoch_hook(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Clean / FGSM / PGD accuracy on the monitor set at the training eps."""
        from ..evaluate import accuracy, robust_accuracy
        from ..registry import attack as make_attack

        assert self.monitor is not None
        x, y = self.monitor.x, self.monitor.y
        eps = self.attack.eps or 8 / 255
        return {
            "monitor_clean": accuracy(model, x, y),
            "monitor_fgsm": robust_accuracy(make_attack("fgsm", eps=eps), model, x, y)["accuracy"],
            "monitor_pgd": robust_accuracy(make_attack("pgd", eps=eps, steps=10), model, x, y)["accuracy"],
        }

    @property
    def catastrophic_overfitting(self) -> bool | None:
        """True when monitored PGD accuracy fell below half its best while FGSM accuracy held."""
        pgd = [h["monitor_pgd"] for h in self.history if "monitor_pgd" in h]
        fgsm = [h["monitor_fgsm"] for h in self.history if "monitor_fgsm" in h]
        if not pgd:
            return None
        return max(pgd) > 0.1 and pgd[-1] < 0.5 * max(pgd) and fgsm[-1] >= 0.8 * max(fgsm)

    def _apply(self, model, data):
        epoch_hook = self.epoch_hook if self.monitor is not None else None
        spec = spec_of(model)
        if spec is None:  # a foreign model: fine-tune a copy, uncached
            model = fresh_copy(model)
            self.history = fit(model, data.x, data.y, self.train_config, self.batch_hook, epoch_hook, self.progress)
            return model
        key = {**self.config(), "monitor": None if self.monitor is None else self.monitor.fingerprint()}
        robust, meta = train_model(
            spec, data, self.train_config, batch_hook=self.batch_hook, epoch_hook=epoch_hook,
            key_extra=key, cache=self.cache, progress=self.progress,
        )  # fmt: skip
        self.history = meta["history"]
        return robust

    def config(self):
        return {
            "defense": self.name,
            "attack": self.attack.describe(),
            "mix": self.mix,
            "targeted": self.targeted,
            "train": dataclasses.asdict(self.train_config),
        }


class SqueezedTraining(Defense):
    """Train the classifier on squeezed (e.g. median-filtered) images and squeeze its inputs (seed 004)."""

    name = "squeezed_training"
    needs_data = True

    def __init__(
        self,
        squeezer: str = "median_filter:2",
        train_config: TrainConfig | None = None,
        cache: Any = True,
        progress: bool = True,
    ):
        from ..squeezers import squeezer as parse

        self.squeezer_name = squeezer
        self.squeeze = parse(squeezer)
        self.train_config = train_config or TrainConfig()
        self.cache, self.progress = cache, progress

    def _apply(self, model, data):
        spec = spec_of(model)
        if spec is None:
            raise TypeError(
                "squeezed_training trains a new network of the model's architecture: pass a robustkit model"
            )
        squeezed = dataclasses.replace(
            data, x=torch.cat([self.squeeze(data.x[i : i + 2048]) for i in range(0, len(data), 2048)])
        )
        net, _ = train_model(
            spec, squeezed, self.train_config, key_extra=self.config(), cache=self.cache, progress=self.progress
        )
        return PreprocessedModel(self.squeeze, net, straight_through=True)

    def config(self):
        return {"defense": self.name, "squeezer": self.squeezer_name, "train": dataclasses.asdict(self.train_config)}
