"""The official AutoAttack (the authors' code, packaged as ``pyautoattack``) and its component attacks.

Backend ``autoattack``. Each component (APGD, APGD-T, FAB, FAB-T, Square) is one robustkit attack
that builds the authors' attack object and calls its ``perturb``, as ``AutoAttack.run_standard_evaluation``
does; the suite `AutoAttack` runs ``run_standard_evaluation`` itself and can hand its components,
configured as the chosen version configures them, to `robust_accuracy` (early stopping across data
batches, torch.distributed sharding, a log of the accuracy after each component and a resumable
state): on the same batches and seed the two give the same adversarial images.

Every attack has L∞, L2 and L1 variants (registry names ``apgd``, ``apgd_l2``, ``apgd_l1``, …).
Papers: Croce & Hein 2020 (APGD, AutoAttack), Croce & Hein 2020b (FAB), Andriushchenko et al. 2020
(Square), Croce & Hein 2021 (L1 APGD).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.backends import require
from ..core.papers import ANDRIUSHCHENKO_2020, CROCE_2020, CROCE_2021_L1, CROCE_HEIN_2020_FAB
from ..core.params import Param, positive_int, strings
from .base import Attack, draw_seed, eps_param

OFFICIAL_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
BUDGETS = {"linf": 8 / 255, "l2": 0.5, "l1": 12.0}
"""RobustBench's CIFAR-10 budgets per norm (L1: Croce & Hein 2021's 12)."""

STEPS = positive_int("steps", 100, "iterations (AutoAttack: 100)")
RESTARTS = positive_int("restarts", 1, "restarts (AutoAttack standard: 1; plus: 5)")
RHO = Param("rho", 0.75, "step-size halving threshold (the paper's ρ)", low=0, high=1, low_open=True)
TARGET_CLASSES = positive_int("target_classes", 9, "runner-up classes tried as targets, one after another")
EOT_ITER = positive_int("eot_samples", 1, "gradients averaged per step (AutoAttack rand: 20)")
LARGE_EPS = Param("large_eps", None, "start at 3ε and 2ε before ε (AutoAttack L1: on)", types=(bool,), optional=True)
LOGGER = "auto-attack"  # the authors' logger name: its warnings are the flag checks


class _Official(Attack):
    """Shared plumbing: the authors' ``norm`` string, seed and device."""

    backend = "autoattack"
    paper = CROCE_2020

    def _run_indexed(self, model, x, y, target, num_classes, index):
        with quiet_official():  # the authors' progress lines and warnings: `autoattack_flags` reports the latter
            return self._run(model, x, y, target, num_classes)

    def _official_norm(self) -> str:
        return OFFICIAL_NORMS[self.norm]

    def _seed(self) -> int:
        return draw_seed() if self.seed is None else self.seed

    def _check(self) -> None:
        if self.params.get("large_eps") and self.norm != "l1":
            raise ValueError(f"large_eps=True is the L1 schedule of APGD; {self.name} is {self.norm_label()}: drop it")

    def _large_eps(self) -> bool:
        large = self.params.get("large_eps")
        return self.norm == "l1" if large is None else large


class _APGD(_Official):
    """APGD (Croce & Hein 2020): PGD whose step size halves when progress stalls, on the CE or DLR loss.

    The authors' ``APGDAttack`` (``pyautoattack``); AutoAttack's APGD-CE is ``loss="ce"``.
    """

    parameters_extra: ClassVar[tuple[Param, ...]] = (
        STEPS,
        RESTARTS,
        Param("loss", "ce", "loss to ascend: cross-entropy or DLR", types=(str,), choices=("ce", "dlr")),
        RHO,
        EOT_ITER,
        LARGE_EPS,
    )

    def _run(self, model: nn.Module, x, y, target, num_classes):
        aa = require("pyautoattack.autopgd_base")
        p = self.params
        attack = aa.APGDAttack(
            model, n_iter=p["steps"], norm=self._official_norm(), n_restarts=p["restarts"], eps=p["eps"],
            seed=self._seed(), loss=p["loss"], eot_iter=p["eot_samples"], rho=p["rho"], device=x.device,
            use_largereps=self._large_eps(), logger=logging.getLogger(LOGGER),
        )  # fmt: skip
        return attack.perturb(x, y)


class _APGDT(_Official):
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, for each of the ``target_classes``
    runner-up classes in turn, keeping the first success: an untargeted attack for the user."""

    parameters_extra: ClassVar[tuple[Param, ...]] = (STEPS, RESTARTS, TARGET_CLASSES, RHO, EOT_ITER, LARGE_EPS)

    def _run(self, model: nn.Module, x, y, target, num_classes):
        aa = require("pyautoattack.autopgd_base")
        p = self.params
        attack = aa.APGDAttack_targeted(
            model, n_iter=p["steps"], norm=self._official_norm(), n_restarts=p["restarts"], eps=p["eps"],
            seed=self._seed(), eot_iter=p["eot_samples"], rho=p["rho"], device=x.device,
            n_target_classes=min(p["target_classes"], num_classes - 1), use_largereps=self._large_eps(),
            logger=logging.getLogger(LOGGER),
        )  # fmt: skip
        return attack.perturb(x, y)


class _FAB(_Official):
    """FAB (Croce & Hein 2020b): the fast adaptive boundary attack, minimal perturbation within ε.

    The authors' ``FABAttack_PT``; FAB-T (`fab_t`) targets the ``target_classes`` runner-up classes in turn.
    """

    paper = CROCE_HEIN_2020_FAB
    multi_targeted: ClassVar[bool] = False
    parameters_extra: ClassVar[tuple[Param, ...]] = (STEPS, RESTARTS)

    def _run(self, model: nn.Module, x, y, target, num_classes):
        fab = require("pyautoattack.fab_pt")
        p = self.params
        attack = fab.FABAttack_PT(
            model, norm=self._official_norm(), n_restarts=p["restarts"], n_iter=p["steps"], eps=p["eps"],
            seed=self._seed(), targeted=self.multi_targeted, device=x.device,
            n_target_classes=min(p.get("target_classes", 9), num_classes - 1),
        )  # fmt: skip
        return attack.perturb(x, y)


class _FABT(_FAB):
    """FAB-T (Croce & Hein 2020b): FAB towards each of the ``target_classes`` runner-up classes in turn.

    The authors' ``FABAttack_PT`` with ``targeted=True``, as AutoAttack's standard version runs it.
    """

    multi_targeted = True
    parameters_extra: ClassVar[tuple[Param, ...]] = (STEPS, RESTARTS, TARGET_CLASSES)


class _Square(_Official):
    """Square Attack (Andriushchenko et al. 2020), the authors' ``SquareAttack`` as AutoAttack runs it
    (margin loss, ``resc_schedule=False``): score-based random search, gradient-free."""

    paper = ANDRIUSHCHENKO_2020
    gradient_free = True
    parameters_extra: ClassVar[tuple[Param, ...]] = (
        positive_int("n_queries", 5000, "queries per image at most (AutoAttack: 5000)"),
        Param("p_init", 0.8, "initial share of pixels a square covers", low=0, high=1, low_open=True),
        RESTARTS,
    )

    def _run(self, model: nn.Module, x, y, target, num_classes):
        sq = require("pyautoattack.square")
        p = self.params
        attack = sq.SquareAttack(
            model, p_init=p["p_init"], n_queries=p["n_queries"], eps=p["eps"], norm=self._official_norm(),
            n_restarts=p["restarts"], seed=self._seed(), device=x.device, resc_schedule=False,
        )  # fmt: skip
        return attack.perturb(x, y)


VERSIONS = ("standard", "plus", "rand", "custom")
COMPONENT_NAMES = {
    "apgd-ce": "apgd",
    "apgd-dlr": "apgd",
    "apgd-t": "apgd_t",
    "fab": "fab",
    "fab-t": "fab_t",
    "square": "square",
}
"""The authors' component names → robustkit's registry names (before the norm suffix)."""


class _AutoAttack(_Official):
    """AutoAttack (Croce & Hein 2020), the authors' code: an image is robust if it survives every component.

    ``version`` ``standard`` (RobustBench): APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square
    (5000 queries); ``plus``: APGD-CE and APGD-DLR with 5 restarts, FAB (5), Square, APGD-T, FAB-T;
    ``rand`` (randomised defenses): APGD-CE and APGD-DLR with 20-sample EOT; ``custom``: the
    ``attacks`` listed, with the authors' defaults for each. Called on a batch, it
    runs ``AutoAttack.run_standard_evaluation`` on it; `components` gives the same suite as separate
    attacks for `robust_accuracy`, which then logs the accuracy after each component.
    """

    parameters_extra: ClassVar[tuple[Param, ...]] = (
        Param("version", "standard", "attack suite (custom: the attacks given)", types=(str,), choices=VERSIONS),
        strings("attacks", (), f"version custom: the authors' attack names, in order ({', '.join(COMPONENT_NAMES)})"),
    )

    def _check(self) -> None:
        attacks, version = self.params["attacks"], self.params["version"]
        if version == "custom" and not attacks:
            raise ValueError("version='custom' runs the attacks you list: pass attacks=, e.g. ('apgd-ce', 'apgd-t')")
        if version != "custom" and attacks:
            raise ValueError(
                f"attacks= lists a custom suite; version={version!r} fixes its own: drop attacks= or use version='custom'"
            )
        unknown = [a for a in attacks if a not in COMPONENT_NAMES]
        if unknown:
            raise ValueError(f"unknown AutoAttack attack {unknown[0]!r}; valid: {', '.join(COMPONENT_NAMES)}")

    def official(self, model: nn.Module, device: torch.device | str) -> Any:
        """The authors' ``AutoAttack`` object for ``model``, configured from the parameters."""
        aa = require("pyautoattack")
        p = self.params
        custom = list(p["attacks"]) if p["version"] == "custom" else None
        return aa.AutoAttack(
            model, attacks=custom, device=device, eps=p["eps"], norm=self._official_norm(), seed=self._seed(),
            version=p["version"],
        )  # fmt: skip

    def _run(self, model: nn.Module, x, y, target, num_classes):
        adv, _ = self.official(model, x.device).run_standard_evaluation(x, y, batch_size=len(x))
        return adv

    def components(self) -> list[Attack]:
        """The version's component attacks, configured as ``AutoAttack._set_version`` configures them,
        in its order (the suite's seed is shared, as in the authors' code)."""
        suite = self.official(nn.Identity(), "cpu")
        seed = suite.seed
        suffix = "" if self.norm == "linf" else f"_{self.norm}"
        out: list[Attack] = []
        for name in suite.attacks_to_run:
            common = {"eps": self.params["eps"], "seed": seed}
            if name in ("apgd-ce", "apgd-dlr"):
                a = suite.apgd
                params = {"steps": a.n_iter, "restarts": a.n_restarts, "loss": name[5:], "rho": a.thr_decr,
                          "eot_samples": a.eot_iter, "large_eps": a.use_largereps}  # fmt: skip
            elif name == "apgd-t":
                a = suite.apgd_targeted
                params = {"steps": a.n_iter, "restarts": a.n_restarts, "target_classes": a.n_target_classes,
                          "rho": a.thr_decr, "eot_samples": a.eot_iter, "large_eps": a.use_largereps}  # fmt: skip
            elif name == "fab":
                params = {"steps": suite.fab.n_iter, "restarts": suite.fab.n_restarts}
            elif name == "fab-t":
                params = {"steps": suite.fab.n_iter, "restarts": 1, "target_classes": suite.fab.n_target_classes}
            else:
                params = {
                    "n_queries": suite.square.n_queries,
                    "p_init": suite.square.p_init,
                    "restarts": suite.square.n_restarts,
                }
            out.append(CLASSES[COMPONENT_NAMES[name] + suffix](**common, **params))
        return out

    def component_labels(self) -> list[str]:
        """The authors' names of the version's components, in order (``apgd-ce``, ``apgd-t``, …)."""
        return list(self.official(nn.Identity(), "cpu").attacks_to_run)


@contextlib.contextmanager
def quiet_official() -> Iterator[list[logging.LogRecord]]:
    """Collect the authors' log (its progress lines and its flag-check warnings) instead of printing it."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(LOGGER)
    handler, propagate, level = Keep(), logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level


def _variants(base: type[_Official], name: str, title: str, defaults: dict[str, float] = BUDGETS) -> dict[str, type]:
    """One class per norm: ``name`` (L∞), ``name_l2``, ``name_l1``."""
    out = {}
    for norm in ("linf", "l2", "l1"):
        suffix = "" if norm == "linf" else f"_{norm}"
        cls_name = f"{title}{'' if norm == 'linf' else norm.upper()}"
        doc = base.__doc__ or ""
        out[cls_name] = type(
            cls_name,
            (base,),
            {
                "name": name + suffix,
                "norm": norm,
                "parameters": (eps_param(defaults[norm], norm), *base.parameters_extra),
                "__doc__": f"{doc.splitlines()[0]} ({OFFICIAL_NORMS[norm]}, the authors' code)\n"
                + "\n".join(doc.splitlines()[1:]),
                "__module__": __name__,
                "paper": base.paper if norm != "l1" else f"{base.paper}; {CROCE_2021_L1}",
            },
        )
    return out


_BUILT = {
    **_variants(_APGD, "apgd", "APGD"),
    **_variants(_APGDT, "apgd_t", "APGDT"),
    **_variants(_FAB, "fab", "FAB"),
    **_variants(_FABT, "fab_t", "FABT"),
    **_variants(_Square, "square", "Square"),
    **_variants(_AutoAttack, "autoattack", "AutoAttack"),
}
globals().update(_BUILT)  # APGD, APGDL2, APGDL1, …: the registry's "robustkit.attacks.autoattack:APGD" entries
CLASSES: dict[str, type[Attack]] = {cls.name: cls for cls in _BUILT.values()}
"""Registry name (``apgd_l2``) → class, for the suite's components."""
