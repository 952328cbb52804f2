"""Defensive distillation (Papernot et al. 2016, seed 002) with a real softmax temperature.

ART's DefensiveDistillation has no temperature, and its PyTorch classifier turns
probability targets into argmax labels whenever the loss is CrossEntropyLoss, so the
student would silently learn hard labels. robustkit trains both networks in its own loop:
the teacher at temperature T, the student on the teacher's softmax(z/T) at T; the student
is returned as a plain model, i.e. evaluated at T = 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..train import TrainConfig, train_model
from .base import Defense, spec_of


@torch.no_grad()
def soft_labels(teacher: nn.Module, x: torch.Tensor, temperature: float, batch_size: int = 512) -> torch.Tensor:
    """softmax(teacher(x) / T), row by row: the student's targets."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    out = torch.cat(
        [
            (teacher(x[i : i + batch_size].to(device)) / temperature).softmax(1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    )
    teacher.train(was_training)
    return out


class DefensiveDistillation(Defense):
    """Teacher at temperature T, student on its soft labels at T, student used at T = 1."""

    name = "distillation"
    needs_data = True

    def __init__(
        self,
        temperature: float = 20.0,
        train_config: TrainConfig | None = None,
        cache: Any = True,
        progress: bool = True,
    ):
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = float(temperature)
        self.train_config = train_config or TrainConfig()
        self.cache, self.progress = cache, progress
        self.teacher: nn.Module | None = None

    def _apply(self, model, data):
        spec = spec_of(model)
        if spec is None:
            raise TypeError("distillation trains new networks of the model's architecture: pass a robustkit model")
        config = dataclasses.replace(self.train_config, temperature=self.temperature)
        teacher, _ = train_model(
            spec, data, config, cache=self.cache, progress=self.progress, key_extra={"role": "teacher"}
        )
        targets = soft_labels(teacher, data.x, self.temperature)
        student, _ = train_model(
            spec, data, config, targets=targets, cache=self.cache, progress=self.progress, key_extra={"role": "student"}
        )
        self.teacher = teacher
        return student

    def config(self):
        return {"defense": self.name, "temperature": self.temperature, "train": dataclasses.asdict(self.train_config)}
