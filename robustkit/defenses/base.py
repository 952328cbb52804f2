"""The Defense protocol: ``defense.apply(model, train_data) -> nn.Module``, and shared parameters."""

from __future__ import annotations

import copy
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.params import Configurable, Param, component, flag
from ..modelling.data import Data, ImageSet, as_image_set
from ..modelling.train import TrainConfig

TRAIN_CONFIG = component("train_config", (TrainConfig,), "training settings; None: TrainConfig()'s defaults")
CACHE = Param("cache", True, "model cache: True (default folder), False (no cache) or a folder", types=(bool, str, Path))
PROGRESS = flag("progress", True, "show a progress bar while training")


class Defense(Configurable):
    """Turns a model (and, for training defenses, data) into a defended plain ``nn.Module``."""

    kind = "defense"
    needs_data: ClassVar[bool] = False

    def apply(self, model: nn.Module, data: Data | None = None) -> nn.Module:
        """Return the defended model; ``model`` itself is not changed."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if self.needs_data and data is None:
            raise ValueError(f"defense {self.name!r} trains a model: call apply(model, train_data)")
        return self._apply(model, None if data is None else as_image_set(data))

    @abstractmethod
    def _apply(self, model: nn.Module, data: ImageSet | None) -> nn.Module: ...

    @property
    def train_config(self) -> TrainConfig:
        return self.params.get("train_config") or TrainConfig()

    def cache_key(self) -> dict[str, Any]:
        """What decides a trained defense's result (its parameters, without cache and progress)."""
        return {k: v for k, v in self.describe().items() if k not in ("cache", "progress", "monitor")}


def spec_of(model: nn.Module) -> dict[str, Any] | None:
    """The robustkit spec a model was built from (``None`` for a foreign model)."""
    return getattr(model, "robustkit_spec", None)


def fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy to fine-tune, leaving the caller's model untouched."""
    return copy.deepcopy(model)


def fresh_network(model: nn.Module, seed: int) -> nn.Module:
    """A new network of the same architecture: a deep copy with every parameter re-initialised.

    Each submodule's own ``reset_parameters`` (what PyTorch's layers run when built) draws the
    new weights, seeded with ``seed``; a model with parameters that no submodule can reset is
    refused, since training would start from the caller's weights.
    """
    net = copy.deepcopy(model)
    resettable = [m for m in net.modules() if callable(getattr(m, "reset_parameters", None))]
    covered = {id(p) for m in resettable for p in m.parameters(recurse=False)}
    stale = [name for name, p in net.named_parameters() if id(p) not in covered]
    if stale:
        raise TypeError(
            f"cannot re-initialise parameters {stale[:5]} (their module has no reset_parameters); "
            "pass a robustkit model or one built from standard torch.nn layers"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in resettable:
            module.reset_parameters()
    return net.train()
