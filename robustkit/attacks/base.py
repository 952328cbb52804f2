"""The Attack protocol every backend adapter implements, and the parameters attacks share."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.checks import (
    check_images,
    check_labels,
    gradient_reaches_input,
    inspect_model,
    model_device,
    preserved_state,
)
from ..core.errors import NoGradientError
from ..core.params import Configurable, Param, flag, positive_int
from ..modelling.batches import labelled_batches, slices

NORMS = {"linf": "L∞", "l2": "L2", "l1": "L1"}
"""The threat models' norms (attack ``norm`` values) and how reports write them."""


def eps_param(default: float | None, norm: str, optional: bool = False) -> Param:
    """The budget: a number or a string such as ``"8/255"``, in pixel units of [0, 1] images."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    help = "L∞ budget per pixel (e.g. 8/255)" if norm == "linf" else f"{NORMS[norm]} budget of the whole perturbation"
    if optional:
        help += "; None: unbounded"
    high = {"linf": 1.0, "l2": 1e3, "l1": 1e5}[norm]
    return Param("eps", default, help, budget=True, low=0, high=high, optional=optional)


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Each image's perturbation size in ``norm`` (one value per row of ``delta``)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    return flat.norm(p=2 if norm == "l2" else 1, dim=1)


ALPHA = Param("alpha", None, "step size; None: 2.5·eps/steps (Madry et al.)", low=0, low_open=True, optional=True)
STEPS = positive_int("steps", 10, "iterations")
RANDOM_START = flag("random_start", True, "start from a random point of the eps-ball")
SEED = Param(
    "seed", 0, "seed for random starts; None: draw one from the global torch RNG (torch.manual_seed repeats a run)",
    types=(int,), optional=True,
)  # fmt: skip
EOT_SAMPLES = positive_int("eot_samples", 10, "gradients averaged per step (Expectation over Transformation)")
SQUARE_PARAMETERS = (  # torchattacks' and ART's Square take the same budget, queries and schedule
    positive_int("n_queries", 1000, "queries per image at most (torchattacks and AutoAttack: 5000)"),
    Param("p_init", 0.8, "initial share of pixels a square covers", low=0, high=1, low_open=True),
)
OVERSHOOT = Param("overshoot", 0.02, "relative overshoot past the decision boundary", low=0)
DEEPFOOL_PARAMETERS = (  # ART's DeepFool and robustkit's reference one take the same steps
    positive_int("steps", 50, "iterations at most"),
    OVERSHOOT,
    positive_int("candidates", 10, "classes considered per step (the most likely ones)"),
)


class Attack(Configurable):
    """Turns clean inputs into adversarial ones: ``attack(model, x, y, target=None)``.

    Subclasses set the class attributes and ``parameters``, and implement ``_run`` on
    validated tensors that sit on the model's device. The model runs in eval mode during
    the attack; its mode, ``requires_grad`` flags and ``.grad`` are restored afterwards,
    and ``x`` is never modified.
    """

    kind = "attack"
    backend: ClassVar[str]
    norm: ClassVar[str]  # a key of NORMS: "linf", "l2" or "l1"
    targeted: ClassVar[bool] = False  # whether a targeted mode exists
    bounded: ClassVar[bool] = True  # whether the output stays inside the eps-ball
    per_example_seeds: ClassVar[bool] = False  # whether image i's randomness depends only on (seed, index[i])
    gradient_free: ClassVar[bool] = False  # whether it only queries the model's outputs (Square, HopSkipJump)

    @classmethod
    def declared(cls) -> tuple[Param, ...]:
        return (*cls.parameters, SEED)

    @classmethod
    def label(cls) -> str:
        return f"{cls.name} ({cls.backend})"

    @classmethod
    def norm_label(cls) -> str:
        """``L∞``, ``L2`` or ``L1``: the norm as reports write it."""
        return NORMS[cls.norm]

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
        self,
        model: nn.Module,
        x: Any,
        y: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return adversarial versions of ``x`` (same shape, dtype and device, in [0, 1]).

        ``x`` is a tensor of images with labels ``y``, or an ImageSet or Dataset/DataLoader of
        ``(image, label)`` pairs, attacked batch by batch (the result holds every image).

        ``index`` (int64, one per image) gives each image's position in the whole data set.
        Attacks with ``per_example_seeds`` draw image i's randomness from a generator seeded
        by (``seed``, index[i]), so an image gets the same attack whatever batch it sits in
        (early stopping, sharding across processes); the default is the position in ``x``.
        Other backends draw from one generator per call and ignore ``index``. The call runs
        under its own RNG state, seeded by ``seed`` (``None``: a seed drawn from the global RNG).
        """
        if not isinstance(x, torch.Tensor) or y is None:
            if target is not None or index is not None:
                raise TypeError("target= and index= need images as a tensor x with labels y")
            batches, offset = [], 0
            for xb, yb in labelled_batches(x, y, 256):
                batches.append(self(model, xb, yb, index=torch.arange(offset, offset + len(xb))))
                offset += len(xb)
            if not batches:
                raise ValueError("the data is empty; pass at least one image")
            return torch.cat(batches)
        check_images(x)
        num_classes = inspect_model(model, x)
        check_labels(y, len(x), num_classes)
        index = torch.arange(len(x)) if index is None else check_index(index, len(x))
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
        seed = draw_seed() if self.seed is None else self.seed  # seed=None: each call advances the global RNG
        with preserved_state(model), torch.random.fork_rng(devices=_cuda_devices(device)):
            torch.manual_seed(seed)
            model.eval()
            # Checked first on one image: some backends (torchattacks' C&W, EAD) would silently return x unchanged.
            if not self.gradient_free and not gradient_reaches_input(model, xd):
                raise self._no_gradient()
            try:
                adv = self._run_indexed(model, xd, yd, td, num_classes, index.cpu())
            except RuntimeError:  # autograd's "does not require grad" on other images than the first
                if self.gradient_free or gradient_reaches_input(model, xd):
                    raise
                raise self._no_gradient() from None
        adv = self._project(xd, adv.detach().to(device=device, dtype=x.dtype))
        return adv.to(x.device)

    def _no_gradient(self) -> NoGradientError:
        return NoGradientError(
            f"{self.label()} cannot run: no gradient reaches the input, because the model's forward pass is cut off "
            "from autograd (rounding or thresholding the pixels, .detach(), torch.no_grad() or numpy inside forward). "
            "Attack it with a gradient-free attack (square, hop_skip_jump) or with BPDA (a differentiable stand-in for "
            "that step in the backward pass); robustkit.diagnose's gradients_available check fails on it"
        )

    def _project(self, x: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """Clip to [0, 1] and, for bounded attacks, into the eps-ball (float round-off only)."""
        eps = self.eps
        if self.bounded and eps is not None:
            delta = adv - x
            if self.norm == "linf":
                delta = delta.clamp(-eps, eps)
            else:  # L2, L1: rescaling corrects round-off (the exact L1 projection is not needed for it)
                norms = perturbation_norms(delta, self.norm).clamp_min(1e-12)
                delta = delta * (eps / norms).clamp(max=1.0).view(-1, *([1] * (delta.ndim - 1)))
            adv = x + delta
        return adv.clamp(0.0, 1.0)

    def _run_indexed(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        num_classes: int,
        index: torch.Tensor,
    ) -> torch.Tensor:
        """``_run`` with each image's global position (CPU int64); backends that cannot use it ignore it."""
        return self._run(model, x, y, target, num_classes)

    @abstractmethod
    def _run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, num_classes: int
    ) -> torch.Tensor:
        """Backend call on validated inputs that sit on the model's device."""


def draw_seed() -> int:
    """A seed drawn from the global torch RNG (so ``torch.manual_seed`` reproduces it, and it advances)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def check_index(index: object, n: int) -> torch.Tensor:
    """Check that ``index`` is an int64 tensor of ``n`` non-negative positions."""
    if not isinstance(index, torch.Tensor) or index.dtype != torch.int64:
        got = type(index).__name__ if not isinstance(index, torch.Tensor) else f"dtype {index.dtype}"
        raise TypeError(f"index must be an int64 tensor of positions (torch.arange(n)), got {got}")
    if index.shape != (n,):
        raise ValueError(f"index has shape {tuple(index.shape)}; expected ({n},), one position per image")
    if n and int(index.min()) < 0:
        raise ValueError(f"index has negative positions (min {int(index.min())}); positions start at 0")
    return index


def example_generators(seed: int, index: torch.Tensor) -> Iterator[torch.Generator]:
    """One CPU generator per image, seeded by (``seed``, index[i]) through splitmix64.

    The same generator object is re-seeded for each image, so iterate it once, in order.
    """
    generator = torch.Generator()
    base = _splitmix64(seed & _MASK64)
    for i in index.tolist():
        generator.manual_seed(_splitmix64(base ^ i) >> 1)  # 63 bits: manual_seed's signed range
        yield generator


_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """Steele et al.'s splitmix64 finaliser: nearby inputs give unrelated 64-bit outputs."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def attack_batches(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Run ``attack`` over ``x`` in batches; returns all adversarial images (on x's device).

    Each image's position in ``x`` is its ``index``, so per-example-seeded attacks give the
    same images whatever ``batch_size``.
    """
    out = []
    for s in slices(len(x), batch_size):
        t = None if target is None else target[s]
        out.append(attack(model, x[s], y[s], target=t, index=torch.arange(s.start, s.stop)))
    return torch.cat(out)


def default_alpha(params: dict[str, Any]) -> float:
    """PGD's step size: the declared ``alpha``, or 2.5·eps/steps."""
    return params["alpha"] if params["alpha"] is not None else 2.5 * params["eps"] / params["steps"]


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []
