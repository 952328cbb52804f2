"""The Defense protocol: ``defense.apply(model, train_data) -> nn.Module``."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import nn

from ..data import ImageSet


class Defense(ABC):
    """Turns a model (and, for training defenses, data) into a defended plain ``nn.Module``."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False

    def apply(self, model: nn.Module, data: ImageSet | None = None) -> nn.Module:
        """Return the defended model; ``model`` itself is not changed."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if self.needs_data and not isinstance(data, ImageSet):
            raise ValueError(f"defense {self.name!r} trains a model: call apply(model, train_data) with an ImageSet")
        return self._apply(model, data)

    @abstractmethod
    def _apply(self, model: nn.Module, data: ImageSet | None) -> nn.Module: ...

    def config(self) -> dict[str, Any]:
        """The defense's parameters (part of the cache key of a trained defense)."""
        return {"defense": self.name}


def spec_of(model: nn.Module) -> dict[str, Any] | None:
    """The robustkit spec a model was built from (``None`` for a foreign model)."""
    return getattr(model, "robustkit_spec", None)


def fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy to fine-tune, leaving the caller's model untouched."""
    return copy.deepcopy(model)
