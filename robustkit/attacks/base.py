"""The Attack protocol every backend adapter implements, and the parameters attacks share."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.checks import check_images, check_labels, inspect_model, model_device, preserved_state
from ..core.params import Configurable, Param, flag, positive_int
from ..modelling.batches import labelled_batches, slices


def eps_param(default: float | None, norm: str, optional: bool = False) -> Param:
    """The budget: a number or a string such as ``"8/255"``, in pixel units of [0, 1] images."""
    help = "L∞ budget per pixel (e.g. 8/255)" if norm == "linf" else "L2 budget of the whole perturbation"
    if optional:
        help += "; None: unbounded"
    return Param("eps", default, help, budget=True, low=0, high=1.0 if norm == "linf" else 1e3, optional=optional)


ALPHA = Param("alpha", None, "step size; None: 2.5·eps/steps (Madry et al.)", low=0, low_open=True, optional=True)
STEPS = positive_int("steps", 10, "iterations")
RANDOM_START = flag("random_start", True, "start from a random point of the eps-ball")
SEED = Param("seed", 0, "seed for random starts; None: use the global RNG", types=(int,), optional=True)
OVERSHOOT = Param("overshoot", 0.02, "relative overshoot past the decision boundary", low=0)


class Attack(Configurable):
    """Turns clean inputs into adversarial ones: ``attack(model, x, y, target=None)``.

    Subclasses set the class attributes and ``parameters``, and implement ``_run`` on
    validated tensors that sit on the model's device. The model runs in eval mode during
    the attack; its mode, ``requires_grad`` flags and ``.grad`` are restored afterwards,
    and ``x`` is never modified.
    """

    kind = "attack"
    backend: ClassVar[str]
    norm: ClassVar[str]  # "linf" or "l2"
    targeted: ClassVar[bool] = False  # whether a targeted mode exists
    bounded: ClassVar[bool] = True  # whether the output stays inside the eps-ball

    @classmethod
    def declared(cls) -> tuple[Param, ...]:
        return (*cls.parameters, SEED)

    @classmethod
    def label(cls) -> str:
        return f"{cls.name} ({cls.backend})"

    @property
    def eps(self) -> float | None:
        return self.params.get("eps")

    @property
    def seed(self) -> int | None:
        return self.params["seed"]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "norm": self.norm, **super().describe()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}[{self.backend}]({args})"

    def __call__(
        self, model: nn.Module, x: Any, y: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return adversarial versions of ``x`` (same shape, dtype and device, in [0, 1]).

        ``x`` is a tensor of images with labels ``y``, or an ImageSet or Dataset/DataLoader of
        ``(image, label)`` pairs, attacked batch by batch (the result holds every image).
        """
        if not isinstance(x, torch.Tensor) or y is None:
            if target is not None:
                raise TypeError("target= needs images as a tensor x with labels y")
            batches = [self(model, xb, yb) for xb, yb in labelled_batches(x, y, 256)]
            if not batches:
                raise ValueError("the data is empty; pass at least one image")
            return torch.cat(batches)
        check_images(x)
        num_classes = inspect_model(model, x)
        check_labels(y, len(x), num_classes)
        if target is not None:
            if not self.targeted:
                raise ValueError(
                    f"{self.label()} has no targeted mode; call it without target= "
                    "or use a targeted attack (robustkit list attacks)"
                )
            check_labels(target, len(x), num_classes, name="target")
            same = (target.cpu() == y.cpu()).nonzero().flatten().tolist()
            if same:
                raise ValueError(
                    f"target equals the true label for images {same[:10]}; a targeted attack needs "
                    "another class (robustkit.evaluate.random_targets draws one)"
                )
        device = model_device(model)
        xd, yd = x.detach().to(device).clone(), y.to(device)
        td = None if target is None else target.to(device)
        with preserved_state(model), torch.random.fork_rng(devices=_cuda_devices(device)):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            model.eval()
            adv = self._run(model, xd, yd, td, num_classes)
        adv = self._project(xd, adv.detach().to(device=device, dtype=x.dtype))
        return adv.to(x.device)

    def _project(self, x: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """Clip to [0, 1] and, for bounded attacks, into the eps-ball (float round-off only)."""
        eps = self.eps
        if self.bounded and eps is not None:
            delta = adv - x
            if self.norm == "linf":
                delta = delta.clamp(-eps, eps)
            else:
                norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
                delta = delta * (eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)
            adv = x + delta
        return adv.clamp(0.0, 1.0)

    @abstractmethod
    def _run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, num_classes: int
    ) -> torch.Tensor:
        """Backend call on validated inputs that sit on the model's device."""


def attack_batches(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Run ``attack`` over ``x`` in batches; returns all adversarial images (on x's device)."""
    out = []
    for s in slices(len(x), batch_size):
        out.append(attack(model, x[s], y[s], target=None if target is None else target[s]))
    return torch.cat(out)


def default_alpha(params: dict[str, Any]) -> float:
    """PGD's step size: the declared ``alpha``, or 2.5·eps/steps."""
    return params["alpha"] if params["alpha"] is not None else 2.5 * params["eps"] / params["steps"]


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []
