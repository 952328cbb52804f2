"""The adaptive evaluation's cost: each rung's cost per image, and what ``auto`` adds on a healthy model.

``python -m benchmarks.adaptive [--budget B]`` (not part of ``make bench``; a few minutes on 2 CPU cores)
trains robustkit's digits CNN (cached), builds the tests' masked models around it (tests/test_adaptive.py:
a sigmoid head, input noise, a quantising layer, thresholds that cut autograd, a wrong custom backward) and
runs ``robust_accuracy(pgd ε=0.1, adaptive="auto")`` on the digits test set. It prints, per model, the
first and adaptive robust accuracy and, per rung, the images attacked, the image forward passes and the
seconds per image; the costly rungs (AutoAttack's rand version, HopSkipJump on one-hot decisions) on 48 images
with a large budget; and the overhead of ``auto`` on the healthy model: wall time of ``adaptive="auto"``
over ``adaptive="off"`` (best of 3), for the library call (which runs the trigger checks on 64 images) and
for ``benchmark()`` (whose checks run anyway). Ratios within one run; never run as tests.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

import robustkit as rk
from robustkit.core.errors import RobustkitWarning
from robustkit.modelling.data import load_dataset
from robustkit.modelling.models import model_spec
from robustkit.modelling.train import TrainConfig, train_model

EPS = 0.1


class Head(nn.Module):
    def __init__(self, model: nn.Module, fn) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model(x))


class Noisy(nn.Module):
    def __init__(self, model: nn.Module, std: float = 0.5) -> None:
        super().__init__()
        self.model, self.std = model, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x + self.std * torch.randn_like(x)).clamp(0, 1))


class Quantise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


class Thermometer(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(sum((x > t).float() for t in (0.25, 0.5, 0.75)) / 3)


class _Flip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return -grad


class WrongBackward(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Flip.apply(x)


def _best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=20.0, help="adaptive_budget for the masked models")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RobustkitWarning)
    torch.set_num_threads(1)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    net, _ = train_model(model_spec("small_cnn", train.info), train, TrainConfig(epochs=6, lr=2e-3), progress=False)
    x, y = test.x, test.y
    attack = rk.attack("pgd", eps=EPS)
    models = {
        "sigmoid head": Head(net, torch.sigmoid),
        "input noise (std 0.5)": Noisy(net),
        "quantising layer": nn.Sequential(Quantise(), net),
        "thresholds (cut graph)": Thermometer(net),
        "wrong custom backward": nn.Sequential(WrongBackward(), net),
    }
    print(f"digits test set: {len(x)} images, PGD-10 at eps {EPS}, adaptive='auto', adaptive_budget={args.budget:g}\n")
    print("| model | first | adaptive | rung | images | broken | passes per image | ms per image | cost ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model in models.items():
        torch.manual_seed(0)
        r = rk.evaluate.robust_accuracy(attack, model, x, y, adaptive="auto", adaptive_budget=args.budget)
        a = r.adaptive
        for rung in a.rungs:
            if rung.skipped:
                print(f"| {name} | {a.first_accuracy:.3f} | {a.accuracy:.3f} | {rung.rung}: skipped ({rung.skipped[:60]}) | | | | | |")
                continue
            print(f"| {name} | {a.first_accuracy:.3f} | {a.accuracy:.3f} | {rung.rung} | {rung.images} | {rung.broken} | "
                  f"{rung.passes / rung.images:.1f} | {1000 * rung.seconds / rung.images:.2f} | {a.cost['ratio']:.2f} |")  # fmt: skip
    _costly_rungs(net, x, y)
    off = _best(lambda: rk.evaluate.robust_accuracy(attack, net, x, y))
    auto = _best(lambda: rk.evaluate.robust_accuracy(attack, net, x, y, adaptive="auto"))
    check = rk.evaluate.robust_accuracy(attack, net, x, y, adaptive="auto").adaptive
    print(f"\nhealthy CNN, library call: auto {auto:.3f} s vs off {off:.3f} s: {auto / off:.3f}× "
          f"(rungs run: {len([q for q in check.rungs if not q.skipped])}; trigger checks {check.cost['checks']} passes "
          f"= {check.cost['checks'] / check.cost['first']:.3f}× the first evaluation's {check.cost['first']})")  # fmt: skip
    data = (x, y)
    kw = {"attack": attack, "detectors": ["energy"], "ood": {"far": {"noise": torch.rand(len(x), *x.shape[1:])}}}
    b_off = _best(lambda: rk.evaluate.benchmark(net, data, adaptive="off", **kw))
    b_auto = _best(lambda: rk.evaluate.benchmark(net, data, adaptive="auto", **kw))
    print(f"healthy CNN, benchmark(): auto {b_auto:.3f} s vs off {b_off:.3f} s: {b_auto / b_off:.3f}× (goal ≤ 1.05×)")


def _costly_rungs(net: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int = 48) -> None:
    """The rand and decision rungs (thousands of passes per image) on the first ``n`` images, with a large budget:
    a randomised model under the official AutoAttack (APGD-CE first), and one-hot decisions, beside a white-box
    PGD-40 on the logits behind them (what no decision-based attack can beat)."""
    x, y = x[:n], y[:n]
    first = rk.attack("autoattack", version="custom", attacks=("apgd-ce",), eps=EPS)
    decisions = Head(net, lambda z: nn.functional.one_hot(z.argmax(1), z.shape[1]).float())
    l2, linf = rk.attack("pgd_l2", eps=1.0), rk.attack("pgd", eps=EPS)
    cases = [("input noise (std 0.5), APGD-CE first", first, Noisy(net), None),
             ("one-hot decisions, L2 ε=1", l2, decisions, l2.with_params(steps=40)),
             ("one-hot decisions, L∞ ε=0.1", linf, decisions, linf.with_params(steps=40))]  # fmt: skip
    print(f"\n{n} images, adaptive='auto', adaptive_budget=3000\n")
    print("| model | first | adaptive | white-box PGD-40 on the logits | rung | images | broken | passes per image | ms per image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, a0, model, white in cases:
        torch.manual_seed(0)
        r = rk.evaluate.robust_accuracy(a0, model, x, y, adaptive="auto", adaptive_budget=3000).adaptive
        bound = "" if white is None else f"{rk.evaluate.robust_accuracy(white, net, x, y)['accuracy']:.3f}"
        for rung in (q for q in r.rungs if not q.skipped):
            print(f"| {name} | {r.first_accuracy:.3f} | {r.accuracy:.3f} | {bound} | {rung.rung} | {rung.images} | "
                  f"{rung.broken} | {rung.passes / rung.images:.0f} | {1000 * rung.seconds / rung.images:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
