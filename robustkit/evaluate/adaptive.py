"""Adaptive evaluation: when a check says the attack was fooled, escalate on the images still standing.

The first attack's survivors (the images it left robust) go up a ladder of rungs, each one an
adaptive attack from the literature, chosen by what the checks measured (`TRIGGERS`):

- ``margin``: PGD on the margin/DLR loss of the logits, or of the logarithm of a squashed head's
  output (sigmoid, tanh, softmax), whose flat ends pass no cross-entropy gradient (Carlini & Wagner
  2017, Croce & Hein 2020);
- ``eot``: EOT-PGD over the model's randomness, fresh or seeded by the input (a tiny input jitter
  draws new noise), with the number of samples chosen from the cosine of two gradients (Athalye
  et al. 2018);
- ``bpda``: BPDA with the identity past the non-differentiable step: the first module whose input
  has no (or a zero) gradient path to the pixels, and layers whose gradient is cut, zero or wrong
  (Athalye et al. 2018);
- ``rand``: the official AutoAttack's ``version='rand'`` (APGD-CE and APGD-DLR with 20 EOT samples
  per step) on a randomised model (Croce & Hein 2020);
- ``more_steps``: more iterations and restarts (Carlini et al. 2019, Pintor et al. 2022);
- ``decision``: HopSkipJump on a model whose outputs are decisions only (one-hot or ±1 outputs, where
  Square's margin barely moves), judged within the budget (Chen, Jordan & Wainwright 2020);
- ``gradient_free``: Square with more queries (Andriushchenko et al. 2020).

Each rung runs through `robust_accuracy` itself (batches, log lines, torch.distributed, ``state=``
resume: one state file per rung, ``run.rung-<name>.jsonl`` beside ``run.jsonl``) on exactly the survivors of the rungs
before it, so each image's verdict is the worst case over the first attack and every rung, as
AutoAttack's over its components. The cost is counted in image forward passes of the model (an
attack's gradient step is one, with its backward pass; the judge's pass is one): the ladder runs a
rung only when its predicted passes fit in ``budget`` × the first evaluation's, so the budget holds.

Papers: Athalye et al. 2018; Tramer et al. 2020; Croce et al. 2022; Yao et al. 2021 (A³); Liu et
al. 2022 (A³, adaptive AutoAttack).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from ..attacks.base import Attack, perturbation_norms
from ..attacks.losses import margin_loss
from ..core.checks import model_device, preserved_state
from ..core.distributed import gather, on_first_rank, world
from ..core.errors import NoGradientError, RobustkitWarning
from ..core.papers import (
    ANDRIUSHCHENKO_2020,
    ATHALYE_2018,
    CROCE_2022,
    LIU_2022,
    TRAMER_2020,
    YAO_2021,
)
from ..core.stages import Stage
from ..modelling.batches import labelled_batches
from ..modelling.data import ImageSet
from ..registry import attack as make_attack
from .checks.base import Check, noise_tolerance
from .checks.contract import output_head
from .checks.masking import gradient_consistency, gradients_available, unstable_predictions
from .robustness import RobustAccuracy, _expand
from .robustness import robust_accuracy as _robust_accuracy

PAPERS = f"{ATHALYE_2018}; {TRAMER_2020}; {CROCE_2022}; {YAO_2021}; {LIU_2022}"
MODES = ("auto", "on", "off")
RUNGS = ("margin", "eot", "rand", "bpda", "more_steps", "decision", "gradient_free")
"""The ladder's rungs, in the order they run (cheap and targeted first)."""

TRIGGERS: dict[str, tuple[str, ...]] = {
    "output_head": ("margin", "decision"),
    "loss_gap": ("margin",),
    "gradients_available": ("margin", "bpda", "decision", "gradient_free"),
    "unstable_predictions": ("eot", "rand"),
    "gradient_consistency": ("eot", "bpda", "gradient_free"),
    "gradient_free": ("bpda", "gradient_free"),
    "iterative_vs_single_step": ("bpda", "gradient_free"),
    "unbounded_attack": ("bpda", "gradient_free"),
    "monotone_in_eps": ("bpda", "gradient_free"),
    "forward_optimisation": ("bpda", "gradient_free"),
    "incomplete_optimisation": ("more_steps",),
    "autoattack_flags (randomized)": ("eot", "rand"),
    "autoattack_flags (probabilities)": ("margin",),
    "autoattack_flags (zero_gradient)": ("margin", "bpda", "decision", "gradient_free"),
    "autoattack_flags (square)": ("bpda", "gradient_free"),
    "autoattack_flags (dynamic)": ("gradient_free",),
}
"""A check that warns or fails (by name) → the rungs it asks for."""

RANDOM_EXPLAINS = ("gradient_consistency", "gradient_free", "iterative_vs_single_step")
"""Checks a randomised model (`unstable_predictions` warns) trips by its randomness alone: they then ask for EOT only."""

CONTRACT = ("model_learned", "input_scale", "label_order")
"""Input-contract checks: when one fails, no rung runs (the number is not meaningful until it is fixed)."""

CHECK_SAMPLE = 64  # images the library call's trigger checks run on
JITTER = 1e-4  # L∞ size of the input jitter that draws new input-seeded noise (EOT), far below any budget
EOT_COSINE = 0.95  # the cosine an EOT mean gradient should reach with the true mean gradient
EOT_MAX = 64  # samples per step at most
RUNG_STEPS = 20  # PGD steps of the margin, EOT and BPDA rungs (at least; the first attack's when more)
MORE_STEPS = 4  # the more_steps rung: this many times the first attack's steps ...
RESTARTS = 2  # ... from this many fresh random starts
SQUARE_QUERIES = (300, 5000)  # the gradient_free rung's queries per image: at least, at most
CONSISTENCY_ERROR = 0.5  # a layer whose first-order prediction is off by more than this is bypassed (BPDA)


# ---------------------------------------------------------------- results


@dataclass
class Rung:
    """One rung of the ladder: what triggered it, what it ran and what it broke (``skipped``: why it did not run)."""

    rung: str
    triggered_by: list[str]
    attack: str = ""
    images: int = 0
    broken: int = 0
    accuracy: float | None = None
    passes: int = 0
    seconds: float = 0.0
    note: str = ""
    skipped: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Adaptive:
    """The adaptive evaluation of one robust accuracy.

    ``first_accuracy``: the first attack's number; ``accuracy``: the per-image worst case over it and
    every rung that ran. ``rungs``: one `Rung` per rung asked for (run or skipped). ``cost``: image
    forward passes of the first evaluation, of the trigger checks and of the rungs, their ratio to the
    first, and the budget. ``checks``: the checks judged on the final number (the ones a rung answered
    are listed in ``answered`` instead, plus ``adaptive_evaluation``). ``blocked``: why nothing ran
    when an input-contract check failed.
    """

    mode: str
    n: int
    first_accuracy: float
    accuracy: float
    rungs: list[Rung] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    blocked: str = ""

    @property
    def escalated(self) -> bool:
        return any(not r.skipped for r in self.rungs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "n": self.n,
            "first_accuracy": self.first_accuracy,
            "accuracy": self.accuracy,
            "escalated": self.escalated,
            "rungs": [r.as_dict() for r in self.rungs],
            "cost": dict(self.cost),
            "checks": [c.as_dict() for c in self.checks],
            "answered": list(self.answered),
            "blocked": self.blocked,
            "papers": PAPERS,
        }

    def lines(self) -> list[str]:
        """A Markdown table, one row per rung, for reports."""
        ok = "yes" if all(c.ok for c in self.checks) else "no"
        head = (f"adaptive evaluation ({self.mode}): robust accuracy {self.first_accuracy:.4f} first, "
                f"{self.accuracy:.4f} adaptive; cost {self.cost.get('ratio', 0):.2f}× the first evaluation "
                f"(budget {self.cost.get('budget', 0):g}×); checks pass on the final number: {ok}")  # fmt: skip
        if self.blocked:
            return [head, "", self.blocked]
        if not self.rungs:
            return [head, "", "no check asked for escalation"]
        rows = [head, "", "| rung | triggered by | attack | images | broken | accuracy after | passes | seconds |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in self.rungs:
            if r.skipped:
                rows.append(f"| {r.rung} | {', '.join(r.triggered_by)} | skipped: {r.skipped} | | | | | |")
            else:
                rows.append(f"| {r.rung} | {', '.join(r.triggered_by)} | {r.attack} | {r.images} | {r.broken} | "
                            f"{r.accuracy:.4f} | {r.passes} | {r.seconds:.1f} |")  # fmt: skip
        return rows


# ---------------------------------------------------------------- what to run


def check_mode(adaptive: bool | str) -> str:
    """``"auto"``, ``"on"`` or ``"off"`` from ``adaptive`` (True: on, False: off)."""
    if adaptive is True:
        return "on"
    if adaptive is False or adaptive is None:
        return "off"
    if adaptive not in MODES:
        raise ValueError(f"adaptive={adaptive!r} must be True, False or one of {', '.join(MODES)}")
    return str(adaptive)


def check_budget(budget: float) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0 or not math.isfinite(budget):
        raise ValueError(
            f"adaptive_budget={budget!r} must be a positive number: the rungs' cost as a multiple of the first "
            "evaluation's (default 5.0); to skip the adaptive evaluation pass adaptive='off'"
        )
    return float(budget)


def plan(checks: Sequence[Check], mode: str) -> tuple[dict[str, list[str]], str]:
    """The rungs to run, each with the checks that asked for it, and why nothing runs (or "").

    ``auto``: the rungs of the checks that warn or fail (`TRIGGERS`); ``on``: every rung (each
    still skips itself where it cannot apply); ``off``: none. A failing input-contract check
    (`CONTRACT`) blocks the ladder.
    """
    if mode == "off":
        return {}, ""
    broken = [c.name for c in checks if c.name.split(" (")[0] in CONTRACT and c.status == "fail"]
    if broken:
        return {}, (
            f"not escalated: {', '.join(broken)} failed, so the number is not meaningful until the input contract "
            "is fixed (see those checks); an adaptive attack would only measure the mistake"
        )
    asked: dict[str, list[str]] = {}
    random = any(c.name == "unstable_predictions" and not c.ok for c in checks)
    for c in checks:
        if c.status in ("warn", "fail"):
            rungs = _rungs_of(c.name)
            if random and c.name in RANDOM_EXPLAINS:  # a randomised model's gradients disagree: EOT answers that
                rungs = ("eot", "rand")
            for rung in rungs:
                asked.setdefault(rung, []).append(c.name)
    if mode == "on":
        for rung in RUNGS:
            asked.setdefault(rung, []).append("adaptive=on")
    return {r: asked[r] for r in RUNGS if r in asked}, ""


# ---------------------------------------------------------------- models the rungs attack


class LogHead(nn.Module):
    """log((output − low)/(high − low)): a squashed head's output (sigmoid, softmax: [0, 1]; tanh: [−1, 1])
    back on a log scale, where the other classes' outputs keep their gradient (Carlini & Wagner 2017).

    ``model`` runs in float64 (a copy, where it allows it): a float32 probability underflows to 0 once its
    logit trails by about 87 (a distilled softmax at temperature 20: a logit gap of 4.4), float64 by 745.
    """

    def __init__(self, model: nn.Module, low: float, high: float, sample: torch.Tensor | None = None):
        super().__init__()
        self.low, self.high = low, high
        self.model, self.dtype = model, torch.float32
        if sample is not None:
            try:
                wide = copy.deepcopy(model).double()
                with torch.no_grad():
                    wide.eval()(sample[:1].to(device=model_device(model), dtype=torch.float64))
                self.model, self.dtype = wide, torch.float64
            except Exception:  # a model that cannot run in float64 is attacked as it is
                pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x.to(self.dtype))
        tiny = torch.finfo(self.dtype).tiny
        return torch.log(((out - self.low) / (self.high - self.low)).clamp_min(tiny)).to(x.dtype)


class Jittered(nn.Module):
    """The model on the input plus uniform noise of L∞ size ``jitter``: each call draws new noise, so a
    model whose randomness is seeded by its input becomes random per call, and EOT can average it."""

    def __init__(self, model: nn.Module, jitter: float = JITTER):
        super().__init__()
        self.model, self.jitter = model, jitter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moved = (x + self.jitter * (2 * torch.rand_like(x) - 1)).clamp(0, 1)
        return self.model(x + (moved - x).detach())  # the gradient as at x: the clamp must not zero a border pixel's


class StraightThrough(nn.Module):
    """BPDA with the identity (Athalye et al. 2018): the forward pass is the model's own; in the backward
    pass, the input of each module named in ``inputs`` is replaced by the model's input (the
    non-differentiable preprocessing before it is treated as the identity), and each module named in
    ``outputs`` passes its output's gradient to its input unchanged."""

    def __init__(self, model: nn.Module, inputs: Sequence[str] = (), outputs: Sequence[str] = ()):
        super().__init__()
        self.model = model
        self.inputs, self.outputs = list(inputs), list(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = dict(self.model.named_modules())
        handles = []

        def bypass_input(_: nn.Module, args: tuple) -> tuple:
            u = args[0]
            return (x + (u - x).detach(), *args[1:])

        def bypass_output(_: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            u = args[0]
            return u + (out - u).detach()

        try:
            handles += [modules[name].register_forward_pre_hook(bypass_input) for name in self.inputs]
            handles += [modules[name].register_forward_hook(bypass_output) for name in self.outputs]
            return self.model(x)
        finally:
            for h in handles:
                h.remove()


def find_blockers(model: nn.Module, x: torch.Tensor, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Where BPDA must bypass the model: ``(inputs, outputs, reasons)``.

    ``inputs``: the first module (in call order) whose input has the images' shape but no gradient, or
    an all-zero one, to the pixels (a rounding, thresholding or purifying step in front of it);
    ``outputs``: the leaf modules, other than PyTorch's own layers, that keep their input's shape and whose
    gradient is cut, all zero, or mispredicts the change of their output under a small step by more than
    half (a wrong custom backward). Cost: one forward pass with hooks on every module, a backward pass per candidate.
    """
    names = {m: n for n, m in model.named_modules() if n}
    calls: list[tuple[str, nn.Module, Any, torch.Tensor | None]] = []  # (name, module, its input, a copy of it)

    def pre(m: nn.Module, args: tuple) -> None:
        u = args[0] if args else None
        leaf = next(m.children(), None) is None and isinstance(u, torch.Tensor) and u.is_floating_point()
        calls.append((names[m], m, u, u.detach().clone() if leaf else None))  # the copy: before an in-place op

    handles = [m.register_forward_pre_hook(pre) for m in names]
    inputs: list[str] = []
    outputs: list[str] = []
    reasons: list[str] = []
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    with preserved_state(model), torch.enable_grad():
        model.eval()
        try:
            xd = x.detach().to(device).requires_grad_(True)
            model(xd)
        finally:
            for h in handles:
                h.remove()
        for name, _, u, _ in calls:  # the input side: the first module the pixels reach without a gradient
            if not isinstance(u, torch.Tensor) or u.shape != xd.shape or not u.is_floating_point() or u is xd:
                continue
            if not _reaches(u, xd, generator):
                inputs.append(name)
                reasons.append(f"{name}: its input has no gradient to the pixels")
                break
        for name, m, u, copy in calls:  # the output side: layers whose own gradient is cut, zero or wrong
            if copy is None or not isinstance(u, torch.Tensor) or not u.requires_grad:
                continue
            if type(m).__module__.startswith("torch."):  # PyTorch's own layers differentiate right; on tied or
                continue  # quantised activations (max pooling, ReLU at 0) a small step would misread them as wrong
            why = _blocked_layer(m, copy, generator)
            if why:
                outputs.append(name)
                reasons.append(f"{name}: {why}")
    return inputs, outputs, reasons


def _reaches(u: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> bool:
    """Whether ``u`` has a non-zero gradient to ``x``."""
    if not u.requires_grad:
        return False
    r = torch.randn(u.shape, generator=generator).to(u)
    (grad,) = torch.autograd.grad((u * r).sum(), x, retain_graph=True, allow_unused=True)
    return grad is not None and bool((grad != 0).any())


def _blocked_layer(m: nn.Module, u: torch.Tensor, generator: torch.Generator) -> str:
    """Why layer ``m`` blocks gradient attacks at its input ``u`` (recomputed on copies, so an in-place
    layer is judged right), or "" when it does not or does not keep the input's shape."""
    leaf = u.clone().requires_grad_(True)
    out = m(leaf * 1.0)  # * 1.0: an in-place layer must not write into the leaf
    if not isinstance(out, torch.Tensor) or out.shape != u.shape or not out.is_floating_point():
        return ""
    if not out.requires_grad:
        return "its output is cut from autograd"
    r = torch.randn(out.shape, generator=generator).to(out)
    (grad,) = torch.autograd.grad((out * r).sum(), leaf, allow_unused=True)
    if grad is None or not bool((grad != 0).any()):
        return "its gradient is zero"
    step = 1e-4 * max(float(u.abs().max()), 1e-6)
    d = torch.randint(0, 2, u.shape, generator=generator).to(u) * 2 - 1
    with torch.no_grad():
        base = m(u.clone())
        if not torch.allclose(m(u.clone()), base):
            return ""  # random (dropout in train mode): the EOT rung's case, not BPDA's
        actual = float((r * (m(u.clone() + step * d) - base)).sum())
    predicted = float((grad * d).sum()) * step
    error = abs(predicted - actual) / max(abs(predicted), abs(actual), 1e-12)
    return f"its gradient mispredicts a small step (relative error {error:.0%})" if error > CONSISTENCY_ERROR else ""


def gradient_agreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """Median cosine between two gradients of the logit margin at the same images, each under fresh
    randomness and a new input jitter of size `JITTER`: 1 for a deterministic model, lower the noisier
    its gradients (Athalye et al. 2018's stochastic gradients); images with a zero gradient are left out
    (1 when every one has). Cost: two forward and backward passes."""
    device = model_device(model)
    jittered = Jittered(model)
    grads = []
    with preserved_state(model), torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        model.eval()
        for _ in range(2):
            xd = x.detach().to(device).requires_grad_(True)
            loss = margin_loss(jittered(xd), y.to(device)).sum()  # the cross-entropy's vanishes in float32 noise
            if not loss.requires_grad:  # cut from autograd: no gradient, no randomness to measure (BPDA's case)
                return 1.0
            (g,) = torch.autograd.grad(loss, xd, allow_unused=True)
            grads.append(torch.zeros_like(xd) if g is None else g)
    a, b = grads[0].flatten(1).double(), grads[1].flatten(1).double()
    moving = (a != 0).any(1) & (b != 0).any(1)  # a zero gradient says nothing of randomness (BPDA's case)
    if not bool(moving.any()):
        return 1.0
    return float(F.cosine_similarity(a[moving], b[moving], dim=1).median())


def eot_samples(cosine: float) -> int:
    """Samples per EOT step so the mean gradient's cosine with the true mean reaches `EOT_COSINE`.

    Two draws g = m + noise agree with cosine c ≈ |m|²/(|m|² + σ²); the mean of k draws has cosine
    sqrt(c / (c + (1 − c)/k)) with m, so k = ⌈a²(1 − c)/((1 − a²)c)⌉ for target a, in [2, `EOT_MAX`].
    """
    c = min(max(cosine, 1e-3), 1.0)
    a2 = EOT_COSINE**2
    return int(min(EOT_MAX, max(2, math.ceil(a2 * (1 - c) / ((1 - a2) * c)))))


# ---------------------------------------------------------------- cost


class PassCounter:
    """Counts image forward passes of the given models (hooks add each call's batch size); a call inside
    another counted call (a wrapper around the model, the judge around the attacked model) is not counted again."""

    def __init__(self, *models: nn.Module):
        self.passes = 0
        self.models = list(dict.fromkeys(models))
        self.handles: list[Any] = []
        self.depth = 0

    def __enter__(self) -> PassCounter:
        def enter(_: nn.Module, args: tuple) -> None:
            if self.depth == 0 and args and isinstance(args[0], torch.Tensor):
                self.passes += len(args[0])
            self.depth += 1

        def leave(_: nn.Module, args: tuple, __: Any) -> None:
            self.depth -= 1

        for m in self.models:
            self.handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
        return self

    def __exit__(self, *_: object) -> None:
        for h in self.handles:
            h.remove()


def _agreed(value: int, size: int) -> int:
    """``value`` summed over the ranks (every rank gets the same number, so every rank decides alike)."""
    return sum(gather(lambda: int(value), size))


def per_image_passes(attack: Attack) -> int:
    """Forward passes an attack makes per image at most (its iterations × samples × restarts; queries)."""
    if isinstance(attack, WithinBudget):
        attack = attack.inner
    p = attack.params
    if "max_eval" in p:  # HopSkipJump: per iteration up to max_eval queries and a binary search; the start's tries
        return int(p["max_iter"]) * (int(p["max_eval"]) + 30) + int(p["init_size"]) + 1
    if "n_queries" in p:
        return int(p["n_queries"]) + 2
    if "steps" in p:
        return int(p["steps"]) * int(p.get("eot_samples", 1)) + 1
    if "n_iter" in p:
        return int(p["n_iter"]) * int(p.get("n_restarts", 1) or 1) + 1
    return 100


# ---------------------------------------------------------------- data


def subset(x: Any, y: torch.Tensor | None, index: Sequence[int]) -> tuple[Any, torch.Tensor | None]:
    """The images at ``index`` of ``x`` (a tensor with ``y``, an ImageSet, a map-style Dataset or a DataLoader over one)."""
    rows = torch.as_tensor(list(index), dtype=torch.int64)
    if isinstance(x, torch.Tensor):
        assert y is not None
        return x[rows.to(x.device)], y[rows.to(y.device)]
    if isinstance(x, ImageSet):
        return x.x[rows], x.y[rows]
    data = x.dataset if isinstance(x, DataLoader) else x
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
        return Subset(data, [int(i) for i in rows]), None
    raise TypeError(
        f"the adaptive evaluation reads the survivors by index, which a {type(x).__name__} does not allow: pass a "
        "tensor, an ImageSet or a map-style Dataset (or adaptive='off')"
    )


def images(x: Any, y: torch.Tensor | None, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels at ``index`` as tensors (for the checks' sample)."""
    part, labels = subset(x, y, index)
    if isinstance(part, torch.Tensor):
        assert labels is not None
        return part, labels
    xs, ys = zip(*labelled_batches(part, None, 256), strict=True)
    return torch.cat(xs), torch.cat(ys)


def _beside(state: str | Path, part: str) -> Path:
    """A rung's state file next to the first attack's: ``run.jsonl`` → ``run.rung-bpda.jsonl``."""
    path = Path(state)
    return path.with_name(f"{path.stem}.{part}{path.suffix or '.jsonl'}")


def _length(x: Any) -> int:
    data = x.dataset if isinstance(x, DataLoader) else x
    return len(data)


# ---------------------------------------------------------------- the rungs


@dataclass
class _Plan:
    """What a rung attacks: its attacks, the model they see, and a note."""

    attacks: list[Attack]
    model: nn.Module
    note: str = ""


class _Context:
    """What the rungs need to know about the evaluation."""

    def __init__(self, attack: Attack, model: nn.Module, checks: Sequence[Check], sample: tuple[torch.Tensor, torch.Tensor],
                 seed: int, num_classes: int):  # fmt: skip
        self.attack, self.model, self.checks, self.sample, self.seed = attack, model, checks, sample, seed
        self.num_classes = num_classes
        self.norm, self.eps = attack.norm, attack.eps
        self._cosine: float | None = None
        self.steps = int(attack.params.get("steps", attack.params.get("n_iter", RUNG_STEPS)) or RUNG_STEPS)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def cosine(self) -> float:
        """`gradient_agreement` on the sample, measured once (the eot and rand rungs both read it)."""
        if self._cosine is None:
            self._cosine = gradient_agreement(self.model, *self.sample, seed=self.seed)
        return self._cosine

    def pgd(self, **params: Any) -> Attack:
        name = {"linf": "pgd", "l2": "pgd_l2"}[self.norm]
        return make_attack(name, eps=self.eps, **{"seed": self.seed, **params})

    def no_pgd(self) -> str:
        """Why the PGD rungs cannot run here ("" when they can)."""
        return "" if self.norm in ("linf", "l2") else f"no reference PGD for {self.norm} here"


def _margin(ctx: _Context, room: int) -> _Plan | str:
    if ctx.no_pgd():
        return ctx.no_pgd()
    head = ctx.check("output_head")
    loss = "dlr" if ctx.num_classes >= 3 else "margin"
    steps = max(RUNG_STEPS, ctx.steps)
    if head is not None and head.status != "pass":
        lo, hi = head.values.get("min", 0.0), head.values.get("max", 1.0)
        squashed = next(((a, b) for a, b in ((0.0, 1.0), (-1.0, 1.0)) if a <= lo and hi <= b), None)
        if squashed is not None:
            attack = ctx.pgd(steps=steps, loss="margin")
            note = f"margin loss on log((output − {squashed[0]:g})/{squashed[1] - squashed[0]:g}), the squashed head's log scale"
            return _Plan([attack], LogHead(ctx.model, *squashed, ctx.sample[0]), note)
    return _Plan([ctx.pgd(steps=steps, loss=loss)], ctx.model, f"{loss} loss on the outputs")


def _eot(ctx: _Context, room: int) -> _Plan | str:
    if ctx.norm != "linf":
        return f"EOT-PGD is L∞ only; the threat model is {ctx.norm}"
    cosine = ctx.cosine()
    if cosine >= EOT_COSINE:
        return f"two draws' gradients agree (median cosine {cosine:.3f}): there is no randomness to average"
    want, steps = eot_samples(cosine), ctx.steps
    k = min(want, (room - 1) // steps)
    if k < 2:
        return f"over budget: EOT with 2 samples × {steps} steps per image does not fit ({room} passes per image left)"
    attack = make_attack("eot_pgd", eps=ctx.eps, steps=steps, eot_samples=k, seed=ctx.seed)
    fitted = "" if k == want else f", {want} wanted: the budget allows {k}"
    return _Plan([attack], Jittered(ctx.model), f"{k} samples per step (median gradient cosine {cosine:.3f}{fitted})")


def _rand(ctx: _Context, room: int) -> _Plan | str:
    if ctx.attack.backend != "autoattack":  # the authors' advice for a randomised model evaluated with AutoAttack
        return "the first attack is not the official AutoAttack: the eot rung stands for its 'rand' version"
    name = {"linf": "autoattack", "l2": "autoattack_l2", "l1": "autoattack_l1"}[ctx.norm]
    if importlib.util.find_spec("pyautoattack") is None:
        return "the official AutoAttack is not installed (pip install 'robustkit[autoattack]')"
    cosine = ctx.cosine()
    if cosine >= EOT_COSINE:
        return f"two draws' gradients agree (median cosine {cosine:.3f}): there is no randomness to average"
    suite = make_attack(name, version="rand", eps=ctx.eps, seed=ctx.seed)
    return _Plan(suite.components(), Jittered(ctx.model),
                 f"AutoAttack version='rand': {', '.join(suite.component_labels())} with 20 EOT samples per step")  # fmt: skip


def _decisions_only(ctx: _Context) -> int | None:
    """How many distinct values the outputs take when they are decisions only (one-hot, ±1), else None."""
    head = ctx.check("output_head")
    distinct = None if head is None else head.values.get("distinct_values")
    return distinct if distinct is not None and distinct <= 2 else None


def _decision(ctx: _Context, room: int) -> _Plan | str:
    distinct = _decisions_only(ctx)
    if distinct is None:
        return "the outputs are not decisions only (more than two distinct values): the margin and gradient-free rungs read them"
    name = {"linf": "hop_skip_jump_linf", "l2": "hop_skip_jump"}.get(ctx.norm)
    if name is None:
        return f"no decision-based attack for {ctx.norm} here"
    attack = WithinBudget(make_attack(name, seed=ctx.seed), ctx.eps)
    return _Plan([attack], ctx.model, f"the outputs take {distinct} values: decisions only")


def _bpda(ctx: _Context, room: int) -> _Plan | str:
    if ctx.no_pgd():
        return ctx.no_pgd()
    inputs, outputs, reasons = find_blockers(ctx.model, ctx.sample[0][:16], seed=ctx.seed)
    if not inputs and not outputs:
        return "no module found whose gradient is cut, zero or wrong (a step inside a forward() is not a module)"
    attack = ctx.pgd(steps=max(RUNG_STEPS, ctx.steps))
    return _Plan([attack], StraightThrough(ctx.model, inputs, outputs), "identity past " + "; ".join(reasons))


def _more_steps(ctx: _Context, room: int) -> _Plan | str:
    if ctx.no_pgd():
        return ctx.no_pgd()
    steps = max(MORE_STEPS * ctx.steps, RUNG_STEPS)
    attacks = [ctx.pgd(steps=steps, seed=ctx.seed + 1 + r) for r in range(RESTARTS)]
    return _Plan(attacks, ctx.model, f"{steps} steps × {RESTARTS} random starts")


def _gradient_free(ctx: _Context, room: int) -> _Plan | str:
    name = {"linf": "square", "l2": "square_l2"}.get(ctx.norm)
    if name is None:
        return f"no gradient-free attack for {ctx.norm} here"
    queries = min(SQUARE_QUERIES[1], room - 3)
    if queries < SQUARE_QUERIES[0]:
        return f"over budget: {SQUARE_QUERIES[0]} queries per image do not fit ({room} passes per image left)"
    return _Plan([make_attack(name, eps=ctx.eps, n_queries=queries, seed=ctx.seed)], ctx.model,
                 f"{queries} queries per image ({ANDRIUSHCHENKO_2020.split(',')[0]})")  # fmt: skip


BUILDERS: dict[str, Callable[..., _Plan | str]] = {
    "margin": _margin, "eot": _eot, "rand": _rand, "bpda": _bpda, "more_steps": _more_steps,
    "gradient_free": _gradient_free, "decision": _decision,
}  # fmt: skip


# ---------------------------------------------------------------- the ladder


def trigger_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> list[Check]:
    """The cheap checks the library call runs to decide (the ones `benchmark` runs anyway): `gradients_available`,
    `gradient_consistency`, `unstable_predictions` and `output_head` on a sample."""
    with torch.no_grad(), preserved_state(model):
        model.eval()
        outputs = model(x.to(model_device(model))).cpu()
    return [output_head(outputs), gradients_available(model, x, y), gradient_consistency(model, x, y, seed=seed),
            unstable_predictions(model, x)]  # fmt: skip


def escalate(
    attack: Attack,
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None,
    survivors: Sequence[int],
    checks: Sequence[Check],
    *,
    first_accuracy: float,
    first_passes: int,
    mode: str = "auto",
    budget: float = 5.0,
    batch_size: int = 256,
    eval_model: nn.Module | None = None,
    distributed: bool = True,
    state: str | Path | None = None,
    seed: int = 0,
    check_passes: int = 0,
) -> Adaptive:
    """Run the ladder on the ``survivors`` (global indices of ``x``) of a first evaluation.

    ``checks``: what was measured (they choose the rungs, `plan`); ``first_passes``: the first
    evaluation's cost in image forward passes; ``budget``: the rungs' passes may reach ``budget`` ×
    that. Returns the `Adaptive` record; ``accuracy`` is the fraction of all images robust after every
    rung that ran.
    """
    budget = check_budget(budget)
    _, size = world(distributed)
    n = _length(x) if not isinstance(x, torch.Tensor) else len(x)
    asked, blocked = plan(checks, mode)
    if asked and (not attack.bounded or not attack.eps):
        asked, blocked = {}, (f"not escalated: {attack.label()} has no budget (ε), and the adaptive attacks run within "
                              "one; evaluate a bounded attack (pgd, autoattack) to escalate")  # fmt: skip
    record = Adaptive(mode, n, first_accuracy, first_accuracy, blocked=blocked)
    standing = list(survivors)
    judge = eval_model or model
    allowed = budget * first_passes
    spent = 0
    if asked and standing:
        rng = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(standing), generator=rng)[:CHECK_SAMPLE].tolist()
        xs, ys = images(x, y, [standing[i] for i in sorted(pick)])
        with torch.no_grad(), preserved_state(model):
            model.eval()
            classes = int(model(xs[:1].to(model_device(model))).shape[1])
        ctx = _Context(attack, model, checks, (xs, ys), seed, classes)
    for rung, why in asked.items():
        step = Rung(rung, why)
        record.rungs.append(step)
        if not standing:
            step.skipped = "no image left standing"
            continue
        built = BUILDERS[rung](ctx, int((allowed - spent) // len(standing)))
        if isinstance(built, str):
            step.skipped = built
            continue
        predicted = len(standing) * (sum(per_image_passes(a) for a in built.attacks) + 1)
        if spent + predicted > allowed:
            step.skipped = (f"over budget: about {predicted} passes, {max(allowed - spent, 0):.0f} of "
                            f"{allowed:.0f} left (adaptive_budget={budget:g})")  # fmt: skip
            continue
        part_x, part_y = subset(x, y, standing)
        rung_state = None if state is None else _beside(state, f"rung-{rung}")
        line = Stage(f"adaptive rung {rung}", len(standing)).start(f"triggered by {', '.join(why)}; {built.note}")
        started = time.perf_counter()
        with PassCounter(built.model, model, judge) as counter, warnings.catch_warnings():
            warnings.simplefilter("ignore", RobustkitWarning)  # the first evaluation already raised the cheap checks
            try:
                result = _robust_accuracy(built.attacks, built.model, part_x, part_y, batch_size=batch_size,
                                          eval_model=judge, distributed=distributed, state=rung_state,
                                          keep_survivors=True, assume_correct=True)  # fmt: skip
            except NoGradientError:
                result = None
        if result is None:
            step.skipped = "no gradient reaches the input through this rung's model (the BPDA and gradient-free rungs apply)"
            line.note = f"skipped: {step.skipped}"
            line.end()
            spent += _agreed(counter.passes, size)
            continue
        step.seconds = time.perf_counter() - started
        step.passes = _agreed(counter.passes, size)
        spent += step.passes
        kept = [standing[i] for i in (result.survivors or [])]
        step.attack = " + ".join(a.label() for a in built.attacks)
        step.note, step.images, step.broken = built.note, len(standing), len(standing) - len(kept)
        standing = kept
        step.accuracy = len(standing) / n
        line.done, line.note = step.images, f"{step.broken} broken, robust accuracy {step.accuracy:.4f}, {step.passes} passes"
        line.end()
    record.accuracy = len(standing) / n
    record.cost = {
        "unit": "image forward passes",
        "first": first_passes,
        "checks": check_passes,
        "rungs": spent,
        "ratio": (spent + check_passes) / first_passes if first_passes else 0.0,
        "budget": budget,
        "seconds": sum(r.seconds for r in record.rungs),
    }
    record.checks, record.answered = judge_final(list(checks), record)
    return record


def judge_final(checks: list[Check], record: Adaptive) -> tuple[list[Check], list[str]]:
    """The checks on the final number: a check is answered (dropped from the list, named in ``answered``)
    when a rung it asked for ran and each of its other rungs ran or does not apply (not for lack of budget);
    `adaptive_evaluation` says whether every rung asked for fitted in the budget."""
    ran = {r.rung for r in record.rungs if not r.skipped}
    settled = ran | {r.rung for r in record.rungs if r.skipped and not r.skipped.startswith(("over budget", "no image"))}
    answered = [c.name for c in checks
                if not c.ok and set(_rungs_of(c.name)) & ran and set(_rungs_of(c.name)) <= settled]  # fmt: skip
    kept = [c for c in checks if c.name not in answered]
    return [*kept, converged(record)], answered


def _rungs_of(name: str) -> tuple[str, ...]:
    return TRIGGERS.get(name, TRIGGERS.get(name.split(" (")[0], ()))


def converged(record: Adaptive) -> Check:
    """Whether the ladder ran every rung the checks asked for.

    Warns when the ladder was blocked by an input-contract failure or a rung asked for did not fit in
    the budget (the adaptive number may then still be too high); passes otherwise, saying how far
    the rungs moved the number (`noise_tolerance` tells a real drop from noise).
    """
    values = {"first_accuracy": record.first_accuracy, "accuracy": record.accuracy, "n": record.n,
              "rungs_run": [r.rung for r in record.rungs if not r.skipped]}  # fmt: skip
    if record.blocked:
        return Check("adaptive_evaluation", "warn", record.blocked, values, PAPERS)
    over = [r.rung for r in record.rungs if r.skipped.startswith("over budget")]
    if over:
        detail = (f"rung(s) {', '.join(over)} did not fit in the budget: the adaptive robust accuracy "
                  f"{record.accuracy:.1%} may still be too high; raise adaptive_budget")  # fmt: skip
        return Check("adaptive_evaluation", "warn", detail, values, PAPERS)
    run = [r for r in record.rungs if not r.skipped]
    if run:
        tol = noise_tolerance(record.first_accuracy, record.accuracy, record.n)
        moved = record.first_accuracy - record.accuracy
        verdict = (f"lowered it by {moved:.1%} (noise ±{tol:.1%}): the first attack was fooled" if moved > tol
                   else f"moved it by {moved:.1%}, within noise (±{tol:.1%})")  # fmt: skip
        detail = (f"every rung asked for ran ({', '.join(r.rung for r in run)}) and {verdict}; "
                  f"{record.accuracy:.1%} is the adaptive robust accuracy")  # fmt: skip
        return Check("adaptive_evaluation", "pass", detail, values, PAPERS)
    asked = [r for r in record.rungs if r.skipped]
    detail = ("no check asked for escalation" if not asked else
              "no rung applied: " + "; ".join(f"{r.rung}: {r.skipped}" for r in asked))  # fmt: skip
    return Check("adaptive_evaluation", "pass", detail, values, PAPERS)


# ---------------------------------------------------------------- entry points


class WithinBudget(Attack):
    """A minimal-perturbation attack judged at a budget: where its perturbation is larger than ``eps`` in its
    norm, the clean image comes back (the image is not broken within the budget). For HopSkipJump, the
    decision-based attack (Chen, Jordan & Wainwright 2020), on models that give decisions only."""

    backend = "adaptive"
    gradient_free = True
    parameters = ()

    def __init__(self, inner: Attack, eps: float):
        self.inner, self._eps = inner, float(eps)
        self.name, self.norm = inner.name, inner.norm  # type: ignore[misc]
        super().__init__()

    @property
    def eps(self) -> float:
        return self._eps

    def label(self) -> str:  # type: ignore[override]
        return f"{self.inner.label()} within ε={self._eps:g}"

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "within_eps": self._eps}

    def _run(self, model, x, y, target, num_classes):
        adv = self.inner(model, x, y)
        too_far = perturbation_norms(adv - x, self.norm) > self._eps * (1 + 1e-6)
        adv[too_far] = x[too_far]
        return adv


class _Unattacked(Attack):
    """The identity: stands in for a first attack that cannot run (no gradient), so the clean pass still counts."""

    name = "none"
    backend = "reference"
    norm = "linf"
    gradient_free = True
    parameters = ()

    def _run(self, model, x, y, target, num_classes):
        return x


def first_evaluation(
    attack: Attack | Sequence[Attack], model: nn.Module, x: Any, y: torch.Tensor | None, *, mode: str, **kwargs: Any
) -> tuple[RobustAccuracy, int, list[Check]]:
    """The first attack's `robust_accuracy` with its survivors, its cost in image forward passes, and extra checks.

    Under an adaptive mode a first attack that finds no gradient (`NoGradientError`) does not end the
    evaluation: the clean pass stands in for it (its cost estimated as the attack's), and a failing
    `gradients_available` check sends the survivors to the BPDA and gradient-free rungs.
    """
    judge = kwargs.get("eval_model") or model
    _, size = world(kwargs.get("distributed", True))
    with PassCounter(model, judge) as counter:
        try:
            result = _robust_accuracy(attack, model, x, y, keep_survivors=True, **kwargs)
            attacks, _ = _expand(attack)  # read back from a state file, an attack costs what it would have
            resumed = result.get("resumed", 0) * sum(map(per_image_passes, attacks)) // len(attacks)
            return result, _agreed(counter.passes, size) + resumed, []
        except NoGradientError as err:
            if mode == "off":
                raise
            reason = str(err)
    state = kwargs.pop("state", None)
    with PassCounter(model, judge) as counter:
        result = _robust_accuracy(_Unattacked(), model, x, y, keep_survivors=True,
                                  state=None if state is None else _beside(state, "clean"), **kwargs)  # fmt: skip
    attacks = [attack] if isinstance(attack, Attack) else list(attack)
    estimate = len(result.survivors or []) * sum(per_image_passes(a) for a in attacks) + _agreed(counter.passes, size)
    check = Check("gradients_available", "fail", f"the first attack could not run: {reason}",
                  {"cut_from_autograd": True, "first_attack": attacks[0].label()}, ATHALYE_2018)  # fmt: skip
    return result, estimate, [check]


def robust_accuracy(
    attack: Attack | Sequence[Attack],
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
    eval_model: nn.Module | None = None,
    *,
    early_stop: bool = True,
    distributed: bool = True,
    state: str | Path | None = None,
    adaptive: bool | str = False,
    adaptive_budget: float = 5.0,
    checks: Sequence[Check] | None = None,
    seed: int = 0,
) -> RobustAccuracy:
    """Accuracy under ``attack`` (`robustkit.evaluate.robustness.robust_accuracy`, whose arguments these are),
    optionally followed by the adaptive evaluation.

    ``adaptive``: False/"off" (default: the first attack's number, as before); "auto": run the trigger
    checks (`trigger_checks` on a seeded sample of ``CHECK_SAMPLE`` images, plus ``checks`` you pass, e.g.
    a `diagnose` result's) and climb the rungs they ask for (`TRIGGERS`), so a healthy model pays only
    the checks; True/"on": every rung that applies. ``adaptive_budget``: the rungs' cost at most, as a
    multiple of the first evaluation's, in image forward passes. Then ``accuracy`` is the adaptive
    number (per image, the worst case over the first attack and every rung), ``first_accuracy`` the
    first attack's, and ``.adaptive`` the `Adaptive` record (per rung: trigger, attack, images, broken,
    accuracy after, cost; the checks on the final number).

    Papers: Athalye et al. 2018, https://arxiv.org/abs/1802.00420; Tramer et al. 2020,
    https://arxiv.org/abs/2002.08347; Croce et al. 2022, https://arxiv.org/abs/2202.13711
    """
    mode = check_mode(adaptive)
    if mode == "off":
        return _robust_accuracy(attack, model, x, y, target, batch_size, eval_model, early_stop=early_stop,
                                distributed=distributed, state=state)  # fmt: skip
    check_budget(adaptive_budget)
    if not early_stop:
        raise ValueError("the adaptive evaluation attacks the survivors of early stopping: keep early_stop=True or "
                         "pass adaptive='off'")  # fmt: skip
    if target is not None:
        raise ValueError("the adaptive evaluation is untargeted: drop target= or pass adaptive='off'")
    first, passes, extra = first_evaluation(attack, model, x, y, mode=mode, batch_size=batch_size, eval_model=eval_model,
                                            distributed=distributed, state=state)  # fmt: skip
    measured = [*first.checks, *extra, *(checks or [])]
    check_passes = 0
    if mode == "auto" and first.survivors:
        n = _length(x) if not isinstance(x, torch.Tensor) else len(x)
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:CHECK_SAMPLE].sort().values.tolist()
        xs, ys = images(x, y, pick)
        judge = eval_model or model
        with PassCounter(judge) as counter:  # on rank 0 only: a randomised model must not decide two ladders
            found = on_first_rank(lambda: trigger_checks(judge, xs, ys, seed=seed), distributed)
        check_passes = _agreed(counter.passes, world(distributed)[1])
        have = {c.name for c in measured}
        measured += [c for c in found if c.name not in have]
    lead = attack if isinstance(attack, Attack) else next(iter(attack))
    record = escalate(lead, model, x, y, first.survivors or [], measured, first_accuracy=first["accuracy"],
                      first_passes=passes, mode=mode, budget=adaptive_budget, batch_size=batch_size,
                      eval_model=eval_model, distributed=distributed, state=state, seed=seed,
                      check_passes=check_passes)  # fmt: skip
    first["first_accuracy"] = first["accuracy"]
    first["accuracy"] = record.accuracy
    first.adaptive = record
    return first
