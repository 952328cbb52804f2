"""Name → implementation tables for attacks, detectors and defenses, and the public factories.

Entries are ``"module:Class"`` strings, imported only when used, so listing and
``import robustkit`` never load a backend. Each class declares its parameters once
(`robustkit.core.params`); `catalogue` turns those declarations into the rows that
``robustkit list``, the CLI and the docs' reference tables show.
"""

from __future__ import annotations

import importlib
from typing import Any

from .core.params import Configurable, param_table

# name -> {backend: "module:Class"}; the first backend is the default (fastest correct one).
ATTACKS: dict[str, dict[str, str]] = {
    "fgsm": {
        "reference": "robustkit.attacks.reference:FGSM",
        "torchattacks": "robustkit.attacks.torchattacks:FGSM",
        "art": "robustkit.attacks.art:FGSM",
    },
    # PGD and DeepFool default to the reference implementations: PGD seeds each image's random
    # start by its index, so its numbers do not depend on batching, early stopping or sharding
    # (0.99x torchattacks' time, equal to it bit for bit without random start); DeepFool drops
    # images as they flip (0.50x ART's time at 50 steps, same residual accuracy). benchmarks/.
    "pgd": {
        "reference": "robustkit.attacks.reference:PGD",
        "torchattacks": "robustkit.attacks.torchattacks:PGD",
        "foolbox": "robustkit.attacks.foolbox:PGD",
    },
    "pgd_l2": {
        "reference": "robustkit.attacks.reference:PGDL2",
        "torchattacks": "robustkit.attacks.torchattacks:PGDL2",
        "foolbox": "robustkit.attacks.foolbox:PGDL2",
    },
    "ddn": {"foolbox": "robustkit.attacks.foolbox:DDN"},
    "deepfool": {
        "reference": "robustkit.attacks.reference:DeepFool",
        "art": "robustkit.attacks.art:DeepFool",
        "torchattacks": "robustkit.attacks.torchattacks:DeepFool",
    },
    "eot_pgd": {
        "reference": "robustkit.attacks.reference:EOTPGD",
        "torchattacks": "robustkit.attacks.torchattacks:EOTPGD",
    },
    "square": {
        "torchattacks": "robustkit.attacks.torchattacks:Square",
        "art": "robustkit.attacks.art:Square",
        "autoattack": "robustkit.attacks.autoattack:Square",
    },
    "square_l2": {
        "torchattacks": "robustkit.attacks.torchattacks:SquareL2",
        "autoattack": "robustkit.attacks.autoattack:SquareL2",
    },
    "square_l1": {"autoattack": "robustkit.attacks.autoattack:SquareL1"},
    # AutoAttack defaults to the authors' code (pyautoattack, backend "autoattack"): torchattacks'
    # re-implementation runs 10 APGD iterations where the official one runs 100.
    "autoattack": {
        "autoattack": "robustkit.attacks.autoattack:AutoAttack",
        "torchattacks": "robustkit.attacks.torchattacks:AutoAttack",
    },
    "autoattack_l2": {"autoattack": "robustkit.attacks.autoattack:AutoAttackL2"},
    "autoattack_l1": {"autoattack": "robustkit.attacks.autoattack:AutoAttackL1"},
    # AutoAttack's components, from the authors' code (L∞, L2, L1), then torchattacks' copies of it
    # (L∞, L2: its APGD has no L1 and its FAB's L1 crashes), cross-checked in tests/test_attack_breadth.py
    **{
        name + suffix: {
            "autoattack": f"robustkit.attacks.autoattack:{cls}{suffix[1:].upper()}",
            **(
                {"torchattacks": f"robustkit.attacks.torchattacks:{cls}{suffix[1:].upper()}"} if suffix != "_l1" else {}
            ),
        }
        for name, cls in (("apgd", "APGD"), ("apgd_t", "APGDT"), ("fab", "FAB"), ("fab_t", "FABT"))
        for suffix in ("", "_l2", "_l1")
    },
    # Minimal-perturbation attacks (unbounded). C&W defaults to torchattacks (3-9x faster than ART's line
    # search, smaller L2 where both succeed); EAD to ART (torchattacks' EADL1 shifts its reference image).
    "cw_l2": {"torchattacks": "robustkit.attacks.torchattacks:CW", "art": "robustkit.attacks.art:CW"},
    "ead": {"art": "robustkit.attacks.art:EAD", "torchattacks": "robustkit.attacks.torchattacks:EAD"},
    # Decision-based black box (labels only)
    "hop_skip_jump": {"art": "robustkit.attacks.art:HopSkipJump"},
    "hop_skip_jump_linf": {"art": "robustkit.attacks.art:HopSkipJumpLinf"},
}

DETECTORS: dict[str, str] = {
    "max_logit": "robustkit.detectors.ood:MaxLogit",
    "max_softmax": "robustkit.detectors.ood:MaxSoftmax",
    "energy": "robustkit.detectors.ood:Energy",
    "entropy": "robustkit.detectors.ood:Entropy",
    "odin": "robustkit.detectors.ood:ODIN",
    "mahalanobis": "robustkit.detectors.ood:Mahalanobis",
    "vim": "robustkit.detectors.ood:ViM",
    "knn": "robustkit.detectors.ood:KNN",
    "rmd": "robustkit.detectors.posthoc:RMD",
    "react": "robustkit.detectors.posthoc:ReAct",
    "ash": "robustkit.detectors.posthoc:ASH",
    "scale": "robustkit.detectors.posthoc:SCALE",
    "dice": "robustkit.detectors.posthoc:DICE",
    "she": "robustkit.detectors.posthoc:SHE",
    "nnguide": "robustkit.detectors.posthoc:NNGuide",
    "fdbd": "robustkit.detectors.posthoc:FDBD",
    "nci": "robustkit.detectors.posthoc:NCI",
    "gradnorm": "robustkit.detectors.posthoc:GradNorm",
    "kl_matching": "robustkit.detectors.posthoc:KLMatching",
    "gen": "robustkit.detectors.posthoc:GEN",
    "temperature_scaling": "robustkit.detectors.posthoc:TemperatureScaling",
    "reconstruction": "robustkit.detectors.reconstruction:ReconstructionError",
    "feature_squeezing": "robustkit.detectors.squeezing:FeatureSqueezing",
}

DEFENSES: dict[str, str] = {
    "adversarial_training": "robustkit.defenses.training:AdversarialTraining",
    "distillation": "robustkit.defenses.distillation:DefensiveDistillation",
    "squeezed_training": "robustkit.defenses.training:SqueezedTraining",
    "bit_depth": "robustkit.defenses.preprocess:BitDepth",
    "median_filter": "robustkit.defenses.preprocess:MedianFilter",
    "resample": "robustkit.defenses.preprocess:Resample",
    "ae_purification": "robustkit.defenses.preprocess:AutoencoderPurification",
    "gaussian_augmentation": "robustkit.defenses.smoothing:GaussianAugmentation",
}

KINDS = ("attacks", "detectors", "defenses")


def load(path: str) -> Any:
    """Import ``"module:Class"``."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _unknown(kind: str, name: object, valid: list[str]) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(valid)}")


def attack_class(name: str, backend: str | None = None) -> type:
    """The Attack class for ``name`` from ``backend`` (default: the first listed)."""
    if name not in ATTACKS:
        raise _unknown("attack", name, list(ATTACKS))
    backends = ATTACKS[name]
    if backend is None:
        backend = next(iter(backends))
    if backend not in backends:
        raise ValueError(f"attack {name!r} has no backend {backend!r}; available: {', '.join(backends)}")
    return load(backends[backend])


def detector_class(name: str) -> type:
    """The Detector class registered as ``name``."""
    if name not in DETECTORS:
        raise _unknown("detector", name, list(DETECTORS))
    return load(DETECTORS[name])


def defense_class(name: str) -> type:
    """The Defense class registered as ``name``."""
    if name not in DEFENSES:
        raise _unknown("defense", name, list(DEFENSES))
    return load(DEFENSES[name])


def attack(name: str, backend: str | None = None, **params: Any):
    """Construct an attack: ``attack("pgd", eps="8/255", steps=10)``; see ``robustkit list attacks``."""
    return attack_class(name, backend)(**params)


def detector(name: str, **params: Any):
    """Construct a detector: ``detector("energy").fit(model, loader)``; higher score = more suspicious."""
    return detector_class(name)(**params)


def defense(name: str, **params: Any):
    """Construct a defense: ``defense("median_filter", size=2).apply(model)``."""
    return defense_class(name)(**params)


def classes(kind: str) -> list[tuple[str, str | None, bool, type[Configurable]]]:
    """``(name, backend, is_default, class)`` for every entry of ``kind`` (attacks, detectors, defenses)."""
    if kind == "attacks":
        return [
            (name, backend, i == 0, load(path))
            for name, backends in ATTACKS.items()
            for i, (backend, path) in enumerate(backends.items())
        ]
    if kind in ("detectors", "defenses"):
        table = DETECTORS if kind == "detectors" else DEFENSES
        return [(name, None, True, load(path)) for name, path in table.items()]
    raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")


def catalogue(kind: str) -> list[dict[str, Any]]:
    """One row per entry of ``kind``: name, backend, summary, paper, parameters (and norm, targeted for attacks)."""
    rows = []
    for name, backend, default, cls in classes(kind):
        row: dict[str, Any] = {"name": name, "summary": cls.summary(), "paper": cls.paper, "params": param_table(cls)}
        if kind == "attacks":
            row.update(backend=backend, default=default, norm=cls.norm, targeted=cls.targeted)
        rows.append(row)
    return rows


def attack_table() -> list[dict[str, Any]]:
    """One row per (attack, backend): norm, targeted support, parameter defaults, default flag."""
    return [
        {**{k: r[k] for k in ("name", "backend", "default", "norm", "targeted")},
         "params": {p["name"]: p["default"] for p in r["params"]}}
        for r in catalogue("attacks")
    ]  # fmt: skip
