"""One evaluation of a classifier the way the public leaderboards report it.

`benchmark` measures on one test set: clean accuracy; robust accuracy under a threat model
(by default AutoAttack, standard version, at ε = 8/255 in L∞, as RobustBench reports CIFAR-10, and
4/255 on ImageNet: Croce et al. 2021); and OOD detection against near and far OOD sets with post-hoc
detectors (by default the sets of OpenOOD v1.5 for CIFAR-10, CIFAR-100 and ImageNet-1K, Zhang et al.
2023, and of OpenOOD v1 for MNIST, Yang et al. 2022),
with the sanity checks that apply. It computes and returns a `Benchmark`; writing a report is
the app's job (``robustkit eval``).

Nothing here depends on the process's rank: under ``torchrun`` the sharding happens inside
`accuracy`, `robust_accuracy` and `ood`, so every process returns the same numbers.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..attacks.base import Attack
from ..core.checks import inspect_model, model_device, preserved_state
from ..core.errors import DatasetNotFoundError
from ..core.papers import CROCE_2021, YANG_2022, ZHANG_2023
from ..core.stages import stage
from ..detectors.base import Detector
from ..detectors.ood import find_head
from ..modelling.data import LOADERS, Data, DatasetInfo, ImageSet, as_image_set, load_dataset, match_shape, pick_indices
from ..registry import DETECTORS, attack_class, detector
from ..registry import attack as make_attack
from .adaptive import check_budget, check_mode, escalate, first_evaluation
from .checks import Check, gradients_available, iterative_vs_single_step, unbounded_attack, unstable_predictions
from .checks.attack import gradient_based
from .checks.contract import input_scale, label_order
from .checks.masking import forward_optimisation, gradient_consistency
from .checks.official import autoattack_flags
from .ood import ood as ood_scores
from .predictions import predict
from .robustness import robust_accuracy

GROUPS = ("near", "far")
"""OOD groups: near OOD shares low-level statistics with the ID set (semantic shift only), far
OOD differs in both (OpenOOD v1.5's split)."""

THREATS: dict[str, tuple[str, float]] = {
    "linf": ("autoattack", 8 / 255),
    "l2": ("autoattack_l2", 0.5),
    "l1": ("autoattack_l1", 12.0),
}
"""Default attack and budget per norm: the official AutoAttack (standard version) at RobustBench's
CIFAR-10 budgets (L∞ 8/255, L2 0.5) and Croce & Hein 2021's L1 budget (12). `BUDGETS` overrides the
budget per data set."""

BUDGETS: dict[tuple[str, str], float] = {("imagenet", "linf"): 4 / 255}
"""Default budgets that depend on the data set, by (data set, norm): RobustBench's ImageNet track is L∞ at
4/255 (it has no ImageNet L2 track, so L2 and L1 keep `THREATS`' budgets there)."""


def default_eps(norm: str, dataset: str | None = None) -> float:
    """The default budget for ``norm`` on ``dataset`` (its name; ``imagenet:robustbench`` counts as ``imagenet``):
    `BUDGETS`, else `THREATS`."""
    base = (dataset or "").partition(":")[0]
    return BUDGETS.get((base, norm), THREATS[norm][1])

DEFAULT_DETECTORS = ("max_softmax", "max_logit", "energy", "gen", "mahalanobis", "rmd", "vim", "react", "ash")
"""Post-hoc detectors run by default, covering the families of OpenOOD v1.5's post-hoc baselines
(Zhang et al. 2023): four logit scores (MSP, max logit, energy, GEN), three fitted on the ID
training features (Mahalanobis, relative Mahalanobis, ViM) and two that reshape the features
before the head (ReAct, fitted; ASH). All share one model pass per scored set; the fitted ones
take one pass over the training set each (ASH reads one batch, to find the head). The others
(``robustkit list detectors``) run when named."""

OOD_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "cifar10": {"near": ("cifar100", "tinyimagenet"), "far": ("mnist", "svhn", "textures", "places365")},
    "cifar100": {"near": ("cifar10", "tinyimagenet"), "far": ("mnist", "svhn", "textures", "places365")},
    "mnist": {"near": ("notmnist", "fashionmnist"), "far": ("textures", "cifar10", "tinyimagenet", "places365")},
    "imagenet": {
        "near": ("openood:ssb_hard", "openood:ninco"),
        "far": ("openood:inaturalist", "openood:textures", "openood:openimage_o"),
    },
}
"""Near and far OOD sets per ID data set: OpenOOD v1.5's for CIFAR-10, CIFAR-100 and ImageNet-1K (Zhang
et al. 2023; ImageNet's are read from OpenOOD's image lists under the data root, ``openood:NAME``), OpenOOD
v1's for MNIST (Yang et al. 2022; v1.5 dropped MNIST as an ID set). Any other ID set defaults to
``fakedata`` (noise of its shape), which is also the far fallback when none of the default far sets can
be loaded."""

PAPERS = f"{CROCE_2021}; {ZHANG_2023}; {YANG_2022}"


@dataclass(frozen=True)
class OODSet:
    """An OOD set to evaluate: the name `load_dataset` takes, its group, and whether it is a
    default (a default that is missing is skipped with a note; one asked for is an error)."""

    name: str
    group: str
    default: bool = False
    stands_in_for: tuple[str, ...] = ()
    """The sets this one replaces because none of them could be loaded (the far fallback), else empty."""


@dataclass
class Benchmark:
    """The numbers of one `benchmark` run.

    ``clean_accuracy`` and ``robust_accuracy`` are on the ``n`` test images; an image counts
    as robust when it is classified correctly and stays so under the attack (RobustBench's
    definition, so robust ≤ clean). ``ood`` has one row per (OOD set, detector):
    ``{"group", "set", "detector", "metrics"}`` with AUROC, AUPR-IN, AUPR-OUT and FPR95TPR
    (OOD positive). ``skipped`` says which OOD sets or detectors were not evaluated and why.
    ``scores`` holds the raw detector scores per set (``{set: {detector: (id, ood)}}``) for
    figures; it is not part of `as_dict`.
    """

    dataset: str
    n: int
    num_classes: int
    clean_accuracy: float
    robust_accuracy: float
    attack: dict[str, Any]
    ood: list[dict[str, Any]]
    ood_sets: list[dict[str, Any]]
    skipped: dict[str, str]
    checks: list[Check]
    options: dict[str, Any]
    seconds: dict[str, float]
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict, repr=False)
    adaptive: Any = None
    """The adaptive evaluation (`robustkit.evaluate.adaptive.Adaptive`; ``robust_accuracy`` is then its final
    number and ``adaptive.first_accuracy`` the first attack's), or None with ``adaptive="off"``."""

    @property
    def final_checks(self) -> list[Check]:
        """The checks judged on the reported number: the adaptive evaluation's (a check a rung answered is left
        out, `adaptive_evaluation` added) when it ran, else ``checks``."""
        return list(self.adaptive.checks) if self.adaptive is not None else list(self.checks)

    @property
    def detectors(self) -> list[str]:
        return list(dict.fromkeys(r["detector"] for r in self.ood))

    @property
    def images_per_second(self) -> float:
        """Test images per second of the clean and robust accuracy stage (one clean pass, then the attack on
        the correctly classified images); NaN when it took no measurable time."""
        seconds = self.seconds.get("attack", 0.0)
        return self.n / seconds if seconds > 0 else math.nan

    def group_label(self, group: str) -> str:
        """``far``, or ``far (fakedata stand-in)`` when every set of the group stands in for the sets that
        could not be loaded: a label must not say more than the data behind it."""
        sets = [s for s in self.ood_sets if s["group"] == group]
        if sets and all(s.get("stands_in_for") for s in sets):
            return f"{group} ({', '.join(s['name'] for s in sets)} stand-in)"
        return group

    def means(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{group: {detector: {metric: mean over the group's sets}}}``, as OpenOOD v1.5 summarises."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for group in GROUPS:
            for name in self.detectors:
                rows = [r["metrics"] for r in self.ood if r["group"] == group and r["detector"] == name]
                if rows:
                    out.setdefault(group, {})[name] = {k: float(np.mean([m[k] for m in rows])) for k in rows[0]}
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: every number, the options, the OOD sets, what was skipped, the checks."""
        return {
            "dataset": self.dataset,
            "n": self.n,
            "num_classes": self.num_classes,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attack": self.attack,
            "ood": self.ood,
            "ood_means": {self.group_label(g): m for g, m in self.means().items()},  # "far (fakedata stand-in)"
            "ood_sets": self.ood_sets,
            "skipped": dict(self.skipped),
            "checks": [c.as_dict() for c in self.checks],
            "options": dict(self.options),
            "seconds": dict(self.seconds),
            "images_per_second": self.images_per_second,
            "adaptive": None if self.adaptive is None else self.adaptive.as_dict(),
            "papers": PAPERS,
        }


# ---------------------------------------------------------------- inputs


def threat_model(
    attack: Attack | str | None = None,
    *,
    eps: float | str | None = None,
    norm: str | None = None,
    backend: str | None = None,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    dataset: str | None = None,
) -> Attack:
    """The attack that defines the threat model, built and checked (nothing runs).

    Without ``attack``: `THREATS` for ``norm`` (default ``"linf"``: AutoAttack standard at
    8/255). ``eps`` defaults to RobustBench's budget for the norm on ``dataset`` (`default_eps`:
    4/255 in L∞ on ImageNet, 8/255 elsewhere), not the attack's own default.
    A name gets ``seed`` unless ``params`` sets it. An unbounded attack, or one whose norm is
    not ``norm``, is refused.

    Paper: Croce et al. 2021, RobustBench, https://arxiv.org/abs/2010.09670
    """
    params = dict(params or {})
    if norm is not None and norm not in THREATS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(THREATS)}")
    if eps is not None and "eps" in params:
        raise ValueError("the budget is given twice (eps and params['eps']); give it once, e.g. --eps 8/255")
    if isinstance(attack, Attack):
        if backend is not None or params:
            raise ValueError("backend and params apply to an attack name; configure an Attack object when building it")
        built = attack if eps is None else attack.with_params(eps=eps)
    else:
        if attack is not None and not isinstance(attack, str):
            raise TypeError(f"attack must be an Attack, an attack name or None, got {type(attack).__name__}")
        name = attack if attack is not None else THREATS[norm or "linf"][0]
        cls = attack_class(name, backend)  # an unknown name or backend fails here, naming the valid ones
        if norm is not None and cls.norm != norm:
            raise ValueError(
                f"--norm {norm} but {cls.label()} is an {cls.norm} attack; pick an {norm} attack "
                f"(robustkit list attacks), e.g. --attack {THREATS[norm][0]}, or drop --norm"
            )
        if "eps" not in params and any(p.name == "eps" for p in cls.declared()):
            params["eps"] = eps if eps is not None else default_eps(cls.norm, dataset)
        params.setdefault("seed", seed)
        built = cls(**params)
    if norm is not None and built.norm != norm:
        raise ValueError(f"norm {norm!r} but the attack {built.label()} is {built.norm}; pass an attack of that norm")
    if not built.bounded or built.eps is None:
        raise ValueError(
            f"{built.label()} is unbounded (no eps), so it defines no threat model; use a bounded attack "
            "such as autoattack, pgd, pgd_l2 or fgsm"
        )
    return built


def ood_sets(dataset: str, names: Sequence[str] | None = None) -> list[OODSet]:
    """The OOD sets to evaluate against ID set ``dataset``, grouped near or far (nothing is loaded).

    ``names`` (default: `OOD_SETS` for ``dataset``, else ``fakedata``) are data set names,
    each optionally prefixed ``near:`` or ``far:``; without a prefix the group comes from
    `OOD_SETS` (``fakedata`` is far). Unknown names, a name given twice, the ID set itself and a
    name whose group is unknown are errors.

    Paper: Zhang et al. 2023, OpenOOD v1.5, https://arxiv.org/abs/2306.09301
    """
    base = dataset.partition(":")[0]
    known = OOD_SETS.get(base, {})
    if names is None:
        sets = [OODSet(n, g, default=True) for g in GROUPS for n in known.get(g, ())]
        return sets or [OODSet("fakedata", "far", default=True)]
    if isinstance(names, str):
        raise TypeError("ood takes a list of names, e.g. ['cifar100', 'far:svhn']")
    out: list[OODSet] = []
    for raw in names:
        prefix, sep, rest = raw.partition(":")
        group, name = (prefix, rest) if sep and prefix in GROUPS else (None, raw)
        if not name or name.partition(":")[0] not in LOADERS:
            raise ValueError(
                f"unknown OOD set {raw!r}; valid names: {', '.join(LOADERS)} (robustkit datasets), each optionally "
                "prefixed near: or far:, e.g. --ood near:cifar100"
            )
        if name == dataset:
            raise ValueError(f"OOD set {name!r} is the ID data set itself; choose another --ood")
        if group is None:
            group = next((g for g in GROUPS if name in known.get(g, ())), "far" if name == "fakedata" else None)
        if group is None:
            raise ValueError(
                f"say whether OOD set {name!r} is near or far OOD for {dataset}: --ood near:{name} or --ood far:{name}"
            )
        if any(s.name == name for s in out):
            raise ValueError(f"OOD set {name!r} is given twice; give each set once")
        out.append(OODSet(name, group))
    if not out:
        raise ValueError("no OOD sets given; name at least one (e.g. fakedata) or leave the defaults")
    return out


def _detectors(names: Sequence[str] | Mapping[str, Detector] | None, model: nn.Module) -> tuple[dict[str, Detector], dict[str, str]]:
    """Build the detectors (bad names fail here); default feature detectors the model cannot
    feed are dropped with a note, asked-for ones are an error."""
    if isinstance(names, Mapping):
        if not names or not all(isinstance(d, Detector) for d in names.values()):
            raise TypeError("detectors must be names or a non-empty {name: Detector} dict")
        built = dict(names)
    else:
        if isinstance(names, str):
            raise TypeError("detectors takes a list of names, e.g. ['energy', 'vim']")
        wanted = list(DEFAULT_DETECTORS if names is None else names)
        if not wanted:
            raise ValueError(f"no detectors given; name at least one of {', '.join(DETECTORS)}")
        twice = sorted({n for n in wanted if wanted.count(n) > 1})
        if twice:
            raise ValueError(f"detector {twice[0]!r} is given twice; give each detector once")
        built = {name: detector(name) for name in wanted}  # an unknown name fails here, naming the valid ones
    return built, {}


def _drop_unfed(
    built: dict[str, Detector], asked: bool, model: nn.Module, x: torch.Tensor, skipped: dict[str, str]
) -> None:
    """Drop the feature detectors the model cannot feed (no nn.Linear outputs its logits) with a note in
    ``skipped``; when the caller ``asked`` for them by name, that is an error naming the fix."""
    need = [n for n, d in built.items() if d.reads() == "features"]
    if not need:
        return
    with preserved_state(model), torch.no_grad():
        model.eval()
        try:
            find_head(model, x.to(model_device(model)))
        except ValueError as err:
            if asked:
                raise ValueError(f"detectors {', '.join(need)}: {err}") from None
            for n in need:
                skipped[n] = f"no nn.Linear of the model outputs its logits, so its penultimate features are unknown ({err})"
                del built[n]


def _target_classes(suite: Attack, num_classes: int) -> tuple[int, int]:
    """APGD-T's and FAB-T's target counts in ``suite`` as its components run them (capped at the classes - 1)."""
    found = {c.name.split("_l")[0]: c.params["target_classes"] for c in suite.components() if "target_classes" in c.params}
    return tuple(min(found.get(n, 9), num_classes - 1) for n in ("apgd_t", "fab_t"))  # type: ignore[return-value]


# ---------------------------------------------------------------- the run


class _Stages:
    """A rich progress bar over named stages, timing each one."""

    def __init__(self, bar: Any, total: int):
        self.bar, self.task = bar, bar.add_task("benchmark", total=total)
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, key: str, label: str) -> Iterator[None]:
        self.bar.update(self.task, description=label)
        start = time.perf_counter()
        with stage(label, unit=""):  # a log line at its start and end, whatever the bar shows
            yield
        self.seconds[key] = self.seconds.get(key, 0.0) + round(time.perf_counter() - start, 3)
        self.bar.advance(self.task)


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[_Stages]:
    from rich.progress import Progress

    with Progress(transient=True, disable=not enabled) as bar:
        yield _Stages(bar, total)


class _TestSet:
    """The ID test data as `benchmark` uses it: an ImageSet, or a Dataset streamed in batches
    (never loaded whole: only the check sample is), with its size and image info."""

    def __init__(self, data: ImageSet | torch.utils.data.Dataset) -> None:
        self.data = data
        info = getattr(data, "info", None)  # ImageSets and robustkit's streamed sets carry theirs
        self.info = info if isinstance(info, DatasetInfo) else as_image_set(Subset(data, [0])).info

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    @property
    def streamed(self) -> bool:
        """Whether the images are read batch by batch (a Dataset) rather than held (an ImageSet)."""
        return not isinstance(self.data, ImageSet)

    def sample(self, k: int, seed: int) -> ImageSet:
        """``k`` images drawn with ``seed``, kept in data order, in memory."""
        if isinstance(self.data, ImageSet):
            return self.data.sample(k, seed)
        sample = as_image_set(Subset(self.data, pick_indices(len(self), k, seed).tolist()))
        return replace(sample, info=self.info)


def _test_set(data: Data, limit: int | None) -> _TestSet:
    """Tensors and ImageSets as they are; a Dataset or DataLoader (its dataset) streamed, cut to ``limit``."""
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, ImageSet):
        if len(data) == 0:  # type: ignore[arg-type]
            raise ValueError("the data is empty; pass at least one image")
        if limit is not None and hasattr(data, "take"):  # robustkit's streamed sets keep their info
            return _TestSet(data.take(limit))  # type: ignore[attr-defined]
        return _TestSet(data if limit is None else Subset(data, range(min(limit, len(data)))))  # type: ignore[arg-type]
    return _TestSet(as_image_set(data).take(limit))


def _load_ood(
    sets: Sequence[OODSet], test: _TestSet, limit: int | None, seed: int, root: str | Path | None, download: bool
) -> tuple[dict[OODSet, Data], dict[str, str]]:
    """Load each OOD set at the ID shape (a seeded ``limit`` of it; folder-based sets stay streamed); missing
    defaults become notes."""
    loaded: dict[OODSet, Data] = {}
    skipped: dict[str, str] = {}
    h, w = test.info.shape[1:]
    for s in sets:
        if s.name.partition(":")[0] not in LOADERS:
            skipped[s.name] = (
                f"robustkit has no loader for {s.name}; put its images in a folder and pass --ood {s.group}:imagefolder:PATH"
            )
            continue
        options: dict[str, Any] = {"seed": seed, "size": max(h, w), "sample": limit}
        if isinstance(getattr(test.data, "preprocessing", None), str):  # OpenOOD preprocesses OOD images as the ID ones
            options["preprocessing"] = test.data.preprocessing  # type: ignore[union-attr]
        if s.name == "fakedata":  # as many noise images as ID ones, made as they are read when the ID set streams
            options.update(shape=test.info.shape, size=len(test), stream=test.streamed)
        try:
            data = load_dataset(s.name, "test", root=root, download=download, **options)
        except DatasetNotFoundError as err:
            if not s.default:
                raise
            skipped[s.name] = str(err)
            continue
        loaded[s] = match_shape(data.sample(limit, seed), test.info.shape)
    if not any(s.group == "far" for s in loaded) and any(s.default for s in sets):
        replaced = tuple(s.name for s in sets if s.group == "far")
        fallback = OODSet("fakedata", "far", default=True, stands_in_for=replaced)
        fake = load_dataset("fakedata", "test", shape=test.info.shape, size=len(test), seed=seed, stream=test.streamed)
        loaded[fallback] = fake
        skipped["(far fallback)"] = "none of the default far-OOD sets could be loaded, so fakedata (noise) stands in"
    return loaded, skipped


def benchmark(
    model: nn.Module,
    data: str | Data,
    *,
    train: Data | None = None,
    attack: Attack | str | None = None,
    eps: float | str | None = None,
    norm: str | None = None,
    backend: str | None = None,
    attack_params: Mapping[str, Any] | None = None,
    ood: Sequence[str] | Mapping[str, Mapping[str, Data]] | None = None,
    detectors: Sequence[str] | Mapping[str, Detector] | None = None,
    limit: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    download: bool = False,
    check_sample: int = 128,
    progress: bool = False,
    state: str | Path | None = None,
    batch_size: int | None = None,
    adaptive: bool | str = "auto",
    adaptive_budget: float = 5.0,
) -> Benchmark:
    """Clean accuracy, robust accuracy under a threat model, and OOD detection, with sanity checks.

    ``data`` is a dataset name (its test split; ``train`` defaults to its train split) or
    labelled test data (an ImageSet, a Dataset/DataLoader or an ``(x, y)`` pair; pass
    ``train=`` for detectors that fit on ID training data). ``limit`` keeps the first test
    images and a seeded random ``limit`` of each OOD set. Datasets (``imagenet``'s folders
    among them) are streamed batch by batch: only the checks' sample is held in memory. When
    a named data set's train split is not on disk, the default detectors that fit on it are
    skipped with a note (one asked for by name is an error).

    Threat model (`threat_model`): ``attack`` (an Attack or a name, with ``backend`` and
    ``attack_params``), ``eps``, ``norm``; default the official AutoAttack (standard: APGD-CE,
    APGD-T, FAB-T, Square) at ε = 8/255 in L∞, RobustBench's CIFAR-10 setting, and 4/255 on
    ImageNet, RobustBench's ImageNet setting (`default_eps`; `THREATS` for L2 and L1). Only images the model classifies correctly are attacked, so robust accuracy ≤ clean
    accuracy; a suite's components run one after another on the survivors, and ``attack["log"]``
    gives the accuracy after each. ``state``: a file that lets an interrupted run's attack resume
    (`robust_accuracy`). ``batch_size``: images per batch in every pass (default: each function's own,
    256 for the attacks and 512 for fitting and scoring); lower it for large images or models. The
    attack's survivors of each component are pooled and attacked this many at a time, as AutoAttack's
    ``run_standard_evaluation`` does, and random starts depend on it: pass RobustBench's ``batch_size``
    to attack the same batches.

    OOD (`ood_sets`): ``ood`` names (``near:``/``far:`` prefixes) or ``{"near": {name: data},
    "far": {...}}``; default `OOD_SETS` for the data set (CIFAR-10, OpenOOD v1.5: near CIFAR-100,
    Tiny ImageNet; far MNIST, SVHN, Textures, Places365; ImageNet: near SSB-hard, NINCO; far
    iNaturalist, Textures, OpenImage-O), each brought to the ID shape;
    defaults not on disk (and not downloaded with ``download``) are skipped and listed in
    ``skipped``. ``detectors`` (names or ``{name: Detector}``, default `DEFAULT_DETECTORS`)
    are fitted on ``train`` and scored with one `ood` call per OOD set.

    Checks: `output_head` (the first batch's outputs), `model_learned` and `budget_units` (all test
    images), `input_scale`, `label_order`, `gradients_available`, `gradient_consistency`,
    `unstable_predictions`, `forward_optimisation` and `unbounded_attack` (on a seeded sample of ``check_sample`` test images; a gradient attack,
    the reference PGD, when the threat model's attack includes Square, as AutoAttack does),
    `iterative_vs_single_step` (L∞ attacks other than FGSM; FGSM on all attacked images),
    the official AutoAttack's own flag checks (`autoattack_flags`) when it is the attack, and
    `ood_auroc` and `ood_saturated` per set and detector.

    Adaptive evaluation (`robustkit.evaluate.adaptive`): with ``adaptive="auto"`` (the default) a masking,
    attack or output-head check that warns or fails sends the attack's survivors up the ladder of adaptive
    attacks it asks for, at most ``adaptive_budget`` × the attack's cost (image forward passes); the
    reported ``robust_accuracy`` is then the per-image worst case, ``adaptive`` the record and
    ``final_checks`` the checks on that number. A healthy model runs no rung (the checks are the ones above
    anyway). A first attack that finds no gradient escalates instead of failing. ``"on"``: every rung;
    ``"off"``: the first attack's number only.

    Every input is checked and every data set loaded before the first attack runs. The
    result is the same on every process of a ``torchrun`` job.

    Papers: Croce et al. 2021, RobustBench, https://arxiv.org/abs/2010.09670; Zhang et al. 2023,
    OpenOOD v1.5, https://arxiv.org/abs/2306.09301
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be a positive number of test images (or None for all)")
    if isinstance(check_sample, bool) or not isinstance(check_sample, int) or check_sample < 1:
        raise ValueError(f"check_sample={check_sample!r} must be a positive number of images")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive number of images (or None for the defaults)")
    per_batch = {} if batch_size is None else {"batch_size": batch_size}
    mode = check_mode(adaptive)
    budget = check_budget(adaptive_budget)
    name = data if isinstance(data, str) else None
    info = getattr(data, "info", None)
    id_name = name or (info.name if isinstance(info, DatasetInfo) and info.name != "tensors" else "data")
    atk = threat_model(attack, eps=eps, norm=norm, backend=backend, seed=seed, params=attack_params, dataset=id_name)
    built, skipped = _detectors(detectors, model)
    planned = ood_sets(id_name, ood) if not isinstance(ood, Mapping) else []
    if isinstance(ood, Mapping):
        unknown = sorted(set(ood) - set(GROUPS))
        if unknown or not any(ood.values()):
            raise ValueError(f"ood as a mapping is {{'near': {{name: data}}, 'far': {{...}}}}; got groups {sorted(ood)}")
    needs_fit = [n for n, d in built.items() if d.needs_data and not d.is_fitted()]
    if needs_fit and train is None and name is None:
        raise ValueError(f"detectors {', '.join(needs_fit)} fit on ID training data: pass train= (or drop them)")

    # data: everything is loaded before the first attack
    if name is not None:
        test = _TestSet(load_dataset(name, "test", root=root, download=download, limit=limit))
        if needs_fit and train is None:
            try:
                train = load_dataset(name, "train", root=root, download=download)
            except DatasetNotFoundError as err:
                if detectors is not None:  # asked for by name: the missing split is an error
                    raise DatasetNotFoundError(f"detectors {', '.join(needs_fit)} fit on {name}'s training split: {err}") from None
                for n in needs_fit:
                    skipped[n] = f"it fits on the ID training split, which is not on disk ({err})"
                    del built[n]
    else:
        test = _test_set(data, limit)
    classes = inspect_model(model, test.sample(1, seed).x)
    _drop_unfed(built, detectors is not None, model, test.sample(16, seed).x, skipped)
    if test.info.name != "tensors" and classes != test.info.num_classes:
        raise ValueError(f"the model has {classes} outputs but {test.info.name} has {test.info.num_classes} classes")
    if isinstance(ood, Mapping):
        sets = {OODSet(n, g): d for g in GROUPS for n, d in (ood.get(g) or {}).items()}
        ood_skipped: dict[str, str] = {}
    else:
        sets, ood_skipped = _load_ood(planned, test, limit, seed, root, download)
    skipped.update(ood_skipped)

    torch.manual_seed(seed)
    n = len(test)
    checks: list[Check] = []
    rows: list[dict[str, Any]] = []
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    linf_iterative = atk.norm == "linf" and atk.name != "fgsm"
    cut: list[Check] = []  # gradients_available's failure when the attack found no gradient (adaptive only)
    with _progress(3 + len(sets) + (mode != "off"), progress) as stage:
        with stage("attack", f"clean and robust accuracy: {atk.label()} at eps={atk.eps:.4g}"):
            if mode == "off":
                measured = robust_accuracy(atk, model, test.data, state=state, **per_batch)  # one clean pass, then the correct ones
                first_passes = 0
            else:  # the same, keeping the survivors and the cost for the adaptive evaluation
                measured, first_passes, cut = first_evaluation(atk, model, test.data, None, mode=mode, state=state, **per_batch)
            clean, robust = measured["clean_accuracy"], measured["accuracy"]
            checks += measured.checks  # output_head (first batch), model_learned (all test images)
        with stage("checks", "attack sanity checks"):
            sample = test.sample(check_sample, seed)
            checks.append(input_scale(model, sample.x, sample.y))
            checks.append(label_order(predict(model, sample.x), sample.y, classes, seed=seed))
            checks.append(gradients_available(model, sample.x, sample.y))
            checks.append(gradient_consistency(model, sample.x, sample.y, seed=seed))
            checks.append(unstable_predictions(model, sample.x))
            checks.append(forward_optimisation(model, sample.x))
            if not cut:  # a gradient attack cannot run where the first one found no gradient
                checks.append(unbounded_attack(gradient_based(atk), model, sample.x, sample.y))
            if atk.backend == "autoattack" and hasattr(atk, "components"):
                checks += autoattack_flags(
                    model, sample.x, sample.y, components=atk.component_labels(), log=measured.log,
                    clean_accuracy=clean, randomized_ok=atk.params["version"] == "rand",
                    target_classes=_target_classes(atk, classes),
                )  # fmt: skip
            fgsm = None
            if linf_iterative and not cut:
                fgsm = robust_accuracy(make_attack("fgsm", eps=atk.eps), model, test.data, **per_batch)["accuracy"]
                checks.append(iterative_vs_single_step(robust, fgsm, n))
        record = None
        if mode != "off":
            with stage("adaptive", "adaptive evaluation"):
                have = {c.name for c in checks}
                checks += [c for c in cut if c.name not in have]
                record = escalate(atk, model, test.data, None, measured.survivors or [], checks, first_accuracy=robust,
                                  first_passes=first_passes, mode=mode, budget=budget, state=state, seed=seed,
                                  **per_batch)  # fmt: skip
                if fgsm is not None:  # re-judged on the final number
                    record.checks = [iterative_vs_single_step(record.accuracy, fgsm, n)
                                     if c.name == "iterative_vs_single_step" else c for c in record.checks]  # fmt: skip
                robust = record.accuracy
        with stage("fit", f"fitting {', '.join(built)}"):
            fitted = {k: (d if d.is_fitted() else d.fit(model, train, **per_batch)) for k, d in built.items()}
        for s, ood_data in sets.items():
            with stage("ood", f"OOD: {s.name} ({s.group})"):
                results = ood_scores(fitted, test.data, ood_data.x if isinstance(ood_data, ImageSet) else ood_data, **per_batch)
            assert isinstance(results, dict)
            for det_name, result in results.items():
                rows.append({"group": s.group, "set": s.name, "detector": det_name, "metrics": result.metrics,
                             **({"stands_in_for": list(s.stands_in_for)} if s.stands_in_for else {})})  # fmt: skip
                scores.setdefault(s.name, {})[det_name] = (result.id_scores, result.ood_scores)
                what = f"{det_name}, {s.name}"
                for check in result.checks:  # output_head is the model's, checked above
                    base = check.name.split(" (")[0]
                    if base == "output_head":
                        continue
                    # input_range is the set's, fit_overlap the detector's: each once, not per (detector, set)
                    label = {"input_range": s.name, "fit_overlap": det_name}.get(base, what)
                    labelled = Check(f"{base} ({label})", check.status, check.detail, check.values, check.paper)
                    same = next((i for i, c in enumerate(checks) if c.name == labelled.name), None)
                    if same is None:
                        checks.append(labelled)
                    elif len(check.values.get("median_peak", ())) > len(checks[same].values.get("median_peak", ())):
                        checks[same] = labelled  # input_range with the fit data too, from a detector fitted on it
    described = [
        {"name": s.name, "group": s.group, "default": s.default, "n": len(d) if hasattr(d, "__len__") else None,
         **({"stands_in_for": list(s.stands_in_for)} if s.stands_in_for else {})}
        for s, d in sets.items()
    ]
    options = {
        "limit": limit,
        "seed": seed,
        "check_sample": check_sample,
        "batch_size": batch_size,
        "adaptive": mode,
        "adaptive_budget": budget,
        "detectors": list(built),
        "ood": None if ood is None else (list(ood) if not isinstance(ood, Mapping) else {g: list(v) for g, v in ood.items()}),
    }
    return Benchmark(
        dataset=test.info.name if name is None else name,
        n=n,
        num_classes=classes,
        clean_accuracy=clean,
        robust_accuracy=robust,
        attack={**atk.describe(), "label": atk.label(), "log": measured.log, "resumed": measured.get("resumed", 0)},
        ood=rows,
        ood_sets=described,
        skipped=skipped,
        checks=checks,
        options=options,
        seconds=dict(stage.seconds),
        scores=scores,
        adaptive=record,
    )


def eps_text(eps: float, norm: str) -> str:
    """``8/255`` for an L∞ budget that is a whole number of 1/255 steps, else the number."""
    k = eps * 255
    if norm == "linf" and 0 < eps < 1 and math.isclose(k, round(k), abs_tol=1e-6):
        return f"{round(k)}/255"
    return f"{eps:.4g}"
