"""Defensive distillation (Papernot et al. 2016) with a real softmax temperature.

ART's DefensiveDistillation has no temperature, and its PyTorch classifier turns
probability targets into argmax labels whenever the loss is CrossEntropyLoss, so the
student would silently learn hard labels. robustkit trains both networks in its own loop:
the teacher at temperature T, the student on the teacher's softmax(z/T) at T; the student
is returned as a plain model, i.e. evaluated at T = 1.

Training at T: the cross-entropy of z/T has gradients T to T² times smaller than at T = 1,
and z must grow T-fold for the same confidence; trained naively (Adam, same epochs, coupled
weight decay) the teacher stayed at chance on CIFAR-10 at T = 20. `robustkit.modelling.train`
trains at T with the classifier's head initialised T× larger and given the matching learning
rate and weight decay, which makes the run at T the run at T = 1 step for step, with logits
T× larger, so teacher and student need no extra epochs (the undefended model's config is
used as is). The student's softmax at T = 1 saturates: what Carlini & Wagner 2016 found
behind distillation's apparent robustness.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..core.checks import model_device, preserved_state
from ..core.papers import PAPERNOT_2016
from ..core.params import Param
from ..modelling.batches import map_batches
from ..modelling.train import fit, train_model
from .base import CACHE, PROGRESS, TRAIN_CONFIG, Defense, fresh_network, spec_of


@torch.no_grad()
def soft_labels(teacher: nn.Module, x: torch.Tensor, temperature: float, batch_size: int = 512) -> torch.Tensor:
    """softmax(teacher(x) / T), row by row: the student's targets."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    with preserved_state(teacher):
        teacher.eval()
        return map_batches(lambda b: (teacher(b) / temperature).softmax(1), x, batch_size, model_device(teacher))


class TemperatureScaled(nn.Module):
    """``model(x) / T``: the same predictions as ``model``, with the softmax no longer saturated.

    Attack a distilled network through it: at T = 1 its logits are about T times too large, the
    cross-entropy's gradient vanishes and gradient attacks fail without the model being robust;
    dividing the logits by T restores the gradient (Carlini & Wagner 2016,
    https://arxiv.org/abs/1607.04311).
    """

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


class DefensiveDistillation(Defense):
    """Teacher at temperature T, student on its soft labels at T, student used at T = 1."""

    name = "distillation"
    needs_data = True
    parameters = (
        Param("temperature", 20.0, "softmax temperature T of teacher and student training", low=0, low_open=True),
        TRAIN_CONFIG,
        CACHE,
        PROGRESS,
    )
    paper = PAPERNOT_2016

    def __init__(self, **params):
        super().__init__(**params)
        self.teacher: nn.Module | None = None
        self.history: dict[str, list[dict[str, float]]] = {}

    @property
    def student_config(self):
        """The training config of teacher and student: the caller's, at temperature T."""
        return dataclasses.replace(self.train_config, temperature=self.params["temperature"])

    def _apply(self, model, data):
        spec = spec_of(model)
        p = self.params
        config = self.student_config
        if spec is None:  # a user's architecture: fresh copies, trained uncached on its device
            teacher = fresh_network(model, config.seed).to(model_device(model))
            history_t = fit(teacher, data.x, data.y, config, progress=p["progress"])
            targets = soft_labels(teacher, data.x, p["temperature"])
            student = fresh_network(model, config.seed + 1).to(model_device(model))
            history_s = fit(student, data.x, targets, config, progress=p["progress"])
            self.teacher, self.history = teacher, {"teacher": history_t, "student": history_s}
            return student
        common = {"cache": p["cache"], "progress": p["progress"], "device": model_device(model)}
        teacher, meta_t = train_model(spec, data, config, key_extra={"role": "teacher"}, **common)
        targets = soft_labels(teacher, data.x, p["temperature"])
        student, meta_s = train_model(spec, data, config, targets=targets, key_extra={"role": "student"}, **common)
        self.teacher = teacher
        self.history = {"teacher": meta_t.get("history", []), "student": meta_s.get("history", [])}
        return student
