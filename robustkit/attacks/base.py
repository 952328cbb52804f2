"""The Attack protocol every backend adapter implements."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from ..checks import check_images, check_labels, inspect_model, model_device, parse_eps, preserved_state
from ..errors import BackendMissingError

EXTRAS = {"art": "art", "torchattacks": "torchattacks", "foolbox": "foolbox", "pytorch_ood": "ood"}


def require(module: str) -> Any:
    """Import an optional backend, or raise an error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise BackendMissingError(
            f"{top} is not installed ({err}); install it with: pip install 'robustkit[{EXTRAS.get(top, 'all')}]'"
        ) from None


class Attack(ABC):
    """Turns clean inputs into adversarial ones: ``attack(model, x, y, target=None)``.

    Subclasses set the class attributes and ``defaults`` (every parameter with its
    default), and implement ``_run`` on validated tensors that sit on the model's device.
    The model runs in eval mode during the attack; its mode, ``requires_grad`` flags and
    ``.grad`` are restored afterwards, and ``x`` is never modified.
    """

    name: ClassVar[str]
    backend: ClassVar[str]
    norm: ClassVar[str]  # "linf" or "l2"
    targeted: ClassVar[bool] = False  # whether a targeted mode exists
    bounded: ClassVar[bool] = True  # whether the output stays inside the eps-ball
    single_step: ClassVar[bool] = False  # one gradient, then a step of size eps
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults) - {"seed"})
        if unknown:
            valid = ", ".join([*self.defaults, "seed"])
            raise TypeError(f"{self.name} ({self.backend}) has no parameter {unknown}; valid: {valid}")
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.seed: int | None = self.params.pop("seed", 0)
        if "eps" in self.params and (self.params["eps"] is not None or self.defaults["eps"] is not None):
            limit = 1.0 if self.norm == "linf" else 1e3
            self.params["eps"] = parse_eps(self.params["eps"], limit=limit)
        for key in ("steps", "max_iter"):
            if key in self.params and (not isinstance(self.params[key], int) or self.params[key] < 1):
                raise ValueError(f"{key}={self.params[key]!r} must be a positive integer")

    @property
    def eps(self) -> float | None:
        return self.params.get("eps")

    def with_params(self, **params: Any) -> Attack:
        """A copy of this attack with some parameters changed (e.g. ``eps``)."""
        return type(self)(**{**self.params, "seed": self.seed, **params})

    def describe(self) -> dict[str, Any]:
        """Name, backend, norm and parameters, as JSON-able values."""
        return {"name": self.name, "backend": self.backend, "norm": self.norm, **self.params, "seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}[{self.backend}]({args})"

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return adversarial versions of ``x`` (same shape, dtype and device, in [0, 1])."""
        check_images(x)
        num_classes = inspect_model(model, x)
        check_labels(y, len(x), num_classes)
        if target is not None:
            if not self.targeted:
                raise ValueError(
                    f"{self.name} ({self.backend}) has no targeted mode; call it without target= "
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
            adv = self._run(model, xd, yd, td)
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
    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Backend call on validated inputs that sit on the model's device."""


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []
