"""Training defenses: adversarial training (on the fly, every batch) and training on squeezed data."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack, attack_batches
from ..attacks.reference import FGSM
from ..attacks.torchattacks import PGD
from ..core.checks import inspect_model, model_device, preserved_state
from ..core.papers import GOODFELLOW_2015, WONG_2020, XU_2018
from ..core.params import Param, component, flag
from ..modelling.batches import map_batches
from ..modelling.data import ImageSet
from ..modelling.squeezers import squeezer as parse_squeezer
from ..modelling.train import fit, train_model
from .base import CACHE, PROGRESS, TRAIN_CONFIG, Defense, fresh_copy, fresh_network, spec_of
from .preprocess import PreprocessedModel


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with preserved_state(model), torch.no_grad():
        model.eval()
        preds = map_batches(lambda b: model(b).argmax(1), x, 512, model_device(model))
    return float((preds == y.cpu()).float().mean())


GAP_RATIO = 0.5  # PGD at most this fraction of FGSM ...
GAP_MIN = 0.10  # ... and at least this far below it: collapse at any accuracy level
DROP_RATIO = 0.5  # PGD below this fraction of its best epoch ...
DROP_MIN = 0.05  # ... and at least this far below it (so noise at chance level is no collapse) ...
HOLD_RATIO = 0.8  # ... while FGSM keeps this fraction of its best


def overfitting_signs(history: list[dict[str, float]]) -> dict[str, Any] | None:
    """Catastrophic-overfitting signs in a training history with ``monitor_fgsm``/``monitor_pgd`` rows.

    Two rules, judged at the last monitored epoch (Wong, Rice & Kolter 2020):

    - *gap*: PGD accuracy ≤ ½ of FGSM accuracy and at least 0.10 below it, at the training
      eps. It holds at any accuracy level, e.g. PGD 0.00 from the first epoch while FGSM
      reads 0.46 (CIFAR-10);
    - *drop*: PGD accuracy fell below ½ of its best epoch, and by at least 0.05, while FGSM
      accuracy kept ≥ 0.8 of its best (at any level: 0.09 → 0.01 counts).

    Returns ``None`` for a history without monitored epochs, else the last epoch's numbers,
    which rules hold, ``collapsed`` (either rule) and ``epoch``: the monitored epoch (1-based)
    since which a rule has held at every epoch, or ``None`` when none holds at the end.
    """
    rows = [h for h in history if "monitor_pgd" in h and "monitor_fgsm" in h]
    if not rows:
        return None
    pgd = [float(h["monitor_pgd"]) for h in rows]
    fgsm = [float(h["monitor_fgsm"]) for h in rows]

    def gap(i: int) -> bool:
        return pgd[i] <= GAP_RATIO * fgsm[i] and fgsm[i] - pgd[i] >= GAP_MIN

    def drop(i: int) -> bool:
        best_pgd, best_fgsm = max(pgd[: i + 1]), max(fgsm[: i + 1])
        return pgd[i] < DROP_RATIO * best_pgd and best_pgd - pgd[i] >= DROP_MIN and fgsm[i] >= HOLD_RATIO * best_fgsm

    last = len(rows) - 1
    gap_now, drop_now = gap(last), drop(last)
    onset = None
    for i in range(last, -1, -1):  # the first epoch of the trailing run of epochs where a rule holds
        if not (gap(i) or drop(i)):
            break
        onset = i + 1
    return {
        "collapsed": gap_now or drop_now,
        "gap_rule": gap_now,
        "drop_rule": drop_now,
        "epoch": onset,
        "epochs": len(rows),
        "last_fgsm": fgsm[-1],
        "last_pgd": pgd[-1],
        "best_pgd": max(pgd),
        "best_fgsm": max(fgsm),
    }


class AdversarialTraining(Defense):
    """Train on adversarial examples made from the *current* weights at every batch.

    ``mix`` is the fraction of each batch replaced by its adversarial version; ``targeted``
    attacks a random other class. ``random_start`` makes FGSM start from a uniform random
    point of the ε-ball and step ``alpha`` (default 1.25·ε), then project back into the ball:
    Wong et al. 2020's fix for catastrophic overfitting of plain FGSM training. With
    ``monitor`` (a held-out ImageSet) every epoch records clean, FGSM and PGD accuracy on it,
    and `catastrophic_overfitting` says whether FGSM accuracy is not matched by PGD accuracy
    (`overfitting_signs`).
    """

    name = "adversarial_training"
    needs_data = True
    parameters = (
        component("attack", (Attack,), "the attack that makes training examples; None: FGSM at eps 2/255"),
        Param("mix", 0.5, "fraction of each batch replaced by adversarial examples", low=0, high=1, low_open=True),
        flag("targeted", False, "attack a random other class instead of the true one"),
        flag("random_start", False, "FGSM from a random point of the eps-ball, step alpha (Wong et al. 2020)"),
        Param("alpha", None, "step of random-start FGSM; None: 1.25·eps", low=0, low_open=True, optional=True),
        TRAIN_CONFIG,
        component("monitor", (ImageSet,), "held-out images for per-epoch clean / FGSM / PGD accuracy"),
        CACHE,
        PROGRESS,
    )
    paper = GOODFELLOW_2015 + "; " + WONG_2020

    def _check(self):
        attack = self.params["attack"] or FGSM(eps=2 / 255)
        self.params["attack"] = attack.with_params(seed=None)  # a fresh random start at every batch
        if self.params["targeted"] and not attack.targeted:
            raise ValueError(f"adversarial_training: {attack.label()} has no targeted mode")
        self._step = None
        if self.params["random_start"]:
            if attack.name != "fgsm":
                raise ValueError(
                    f"adversarial_training: random_start applies to FGSM, not {attack.label()} "
                    "(PGD has its own random_start)"
                )
            self._step = attack.with_params(eps=self.alpha)
        self.history: list[dict[str, float]] = []

    @property
    def attack(self) -> Attack:
        return self.params["attack"]

    @property
    def alpha(self) -> float | None:
        """The random-start FGSM step (``None`` without random start)."""
        if not self.params["random_start"]:
            return None
        return self.params["alpha"] if self.params["alpha"] is not None else 1.25 * self.attack.eps

    def batch_hook(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the first ``mix`` fraction of the batch by adversarial examples of the current model."""
        n_adv = max(1, round(self.params["mix"] * len(x)))
        target = None
        if self.params["targeted"]:
            num_classes = inspect_model(model, x)
            shift = torch.randint(1, num_classes, (n_adv,), device=y.device)
            target = (y[:n_adv] + shift) % num_classes
        if self._step is None:
            adv = self.attack(model, x[:n_adv], y[:n_adv], target=target)
        else:  # random start, one FGSM step of size alpha, projection onto the eps-ball
            eps, clean = self.attack.eps, x[:n_adv]
            start = (clean + torch.empty_like(clean).uniform_(-eps, eps)).clamp(0, 1)
            adv = self._step(model, start, y[:n_adv], target=target)
            adv = (clean + (adv - clean).clamp(-eps, eps)).clamp(0, 1)
        return torch.cat([adv, x[n_adv:]]), y

    def epoch_hook(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Clean / FGSM / PGD accuracy on the monitor set at the training eps."""
        monitor = self.params["monitor"]
        x, y = monitor.x, monitor.y
        eps = self.attack.eps or 8 / 255
        out = {"monitor_clean": _accuracy(model, x, y)}
        for label, attack in (("monitor_fgsm", FGSM(eps=eps)), ("monitor_pgd", PGD(eps=eps, steps=10))):
            out[label] = _accuracy(model, attack_batches(attack, model, x, y), y)
        return out

    @property
    def catastrophic_overfitting(self) -> bool | None:
        """Whether the monitored PGD accuracy collapsed while FGSM accuracy held (`overfitting_signs`).

        ``None`` without a monitor. The same rules back ``robustkit.evaluate.catastrophic_overfitting``.
        """
        signs = overfitting_signs(self.history)
        return None if signs is None else signs["collapsed"]

    def _apply(self, model, data):
        p = self.params
        epoch_hook = self.epoch_hook if p["monitor"] is not None else None
        spec = spec_of(model)
        if spec is None:  # a foreign model: fine-tune a copy, uncached
            model = fresh_copy(model)
            self.history = fit(model, data.x, data.y, self.train_config, self.batch_hook, epoch_hook, p["progress"])
            return model
        key = {**self.cache_key(), "monitor": None if p["monitor"] is None else p["monitor"].fingerprint()}
        robust, meta = train_model(
            spec, data, self.train_config, batch_hook=self.batch_hook, epoch_hook=epoch_hook,
            key_extra=key, cache=p["cache"], progress=p["progress"], device=model_device(model),
        )  # fmt: skip
        self.history = meta["history"]
        return robust


def overfitting_verdict(history: list[dict[str, float]]) -> dict[str, Any]:
    """`overfitting_signs` as a verdict for a report: ``overfitting`` (``None`` without monitor
    records), ``reason`` (a sentence) and the last ``fgsm``/``pgd``/``clean`` numbers."""
    signs = overfitting_signs(history)
    if signs is None:
        return {"overfitting": None, "reason": "no monitor: overfitting was not checked"}
    fgsm, pgd = signs["last_fgsm"], signs["last_pgd"]
    last = {"fgsm": fgsm, "pgd": pgd, "clean": history[-1].get("monitor_clean")}
    if signs["drop_rule"]:
        reason = (
            f"monitored PGD accuracy collapsed from {signs['best_pgd']:.3f} to {pgd:.3f} "
            f"while FGSM accuracy held at {fgsm:.3f}"
        )
    elif signs["gap_rule"]:
        reason = (
            f"FGSM accuracy {fgsm:.3f} but PGD accuracy {pgd:.3f} on the monitor at the last epoch (since epoch "
            f"{signs['epoch']}): the model defeats FGSM, not the worst case"
        )
    else:
        reason = f"PGD accuracy {pgd:.3f} tracks FGSM accuracy {fgsm:.3f} on the monitor (no collapse)"
    return {"overfitting": signs["collapsed"], "reason": reason, **last}


class SqueezedTraining(Defense):
    """Train the classifier on squeezed (e.g. median-filtered) images and squeeze its inputs."""

    name = "squeezed_training"
    needs_data = True
    parameters = (
        Param("squeezer", "median_filter:2", "squeezer applied in training and at test time", types=(str,)),
        TRAIN_CONFIG,
        CACHE,
        PROGRESS,
    )
    paper = XU_2018

    def _check(self):
        self.squeeze = parse_squeezer(self.params["squeezer"])

    def _apply(self, model, data):
        spec = spec_of(model)
        squeezed = ImageSet(map_batches(self.squeeze, data.x, 2048), data.y, data.info, data.split)
        p = self.params
        if spec is None:  # a user's architecture: a fresh copy, trained uncached on its device
            net = fresh_network(model, self.train_config.seed).to(model_device(model))
            fit(net, squeezed.x, squeezed.y, self.train_config, progress=p["progress"])
            return PreprocessedModel(self.squeeze, net.eval(), straight_through=True)
        net, _ = train_model(
            spec, squeezed, self.train_config, key_extra=self.cache_key(), cache=p["cache"],
            progress=p["progress"], device=model_device(model),
        )  # fmt: skip
        return PreprocessedModel(self.squeeze, net, straight_through=True)
