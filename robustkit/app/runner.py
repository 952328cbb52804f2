"""What every recipe shares: options, dataset profiles, cached models and the run folder."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.checks import resolve_device
from ..core.distributed import on_first_rank
from ..core.stages import Stage, stage
from ..evaluate.diagnose import Check
from ..modelling.data import ImageSet, in_memory, load_dataset
from ..modelling.models import model_spec
from ..modelling.train import TrainConfig, train_model
from . import sanity
from .report import RunFolder, fmt, load_results, table


@dataclass(frozen=True)
class Profile:
    """Defaults for one kind of dataset, chosen to run in reasonable time on a CPU."""

    arch: str
    train: TrainConfig
    test_limit: int | None
    eps: float  # the dataset's usual L∞ budget
    purifier_noise: float = 0.1
    """Std of the Gaussian noise the denoising purifier learns to remove (ae-purification)."""


PROFILES = {
    "small": Profile("small_cnn", TrainConfig(epochs=10, batch_size=64, lr=2e-3), None, 0.1),
    "mnist": Profile("small_cnn", TrainConfig(epochs=3, batch_size=128), 1000, 0.1),
    # All training images every epoch (no validation split: with 15 epochs on a few thousand
    # images, early stopping on a 10% split stopped training while it still improved), random
    # crop and flip, AdamW (decoupled weight decay) with a one-cycle learning rate.
    "natural": Profile(
        "cnn6",
        TrainConfig(
            epochs=15, batch_size=64, lr=2e-3, weight_decay=5e-4, optimizer="adamw", schedule="onecycle", augment=True
        ),
        1000,
        8 / 255,
        # measured on the CIFAR-10 prefix: noise 0.1 kept 84% of clean accuracy (oblivious PGD
        # 0.20), noise 0.05 kept 96% (oblivious PGD 0.05); a purifier must keep 90%
        purifier_noise=0.05,
    ),
}


def profile_for(data: ImageSet) -> Profile:
    """The profile for a dataset: tiny images, MNIST-sized grey images, or natural colour images."""
    c, h, _ = data.info.shape
    if h <= 16:
        return PROFILES["small"]
    return PROFILES["mnist"] if c == 1 else PROFILES["natural"]


@dataclass
class RecipeOptions:
    """Options every recipe takes (the ``help`` metadata is the CLI's help text)."""

    dataset: str = field(
        default="cifar10",
        metadata={"help": "digits (offline), cifar10, mnist, imagefolder:PATH (imagefolder:PATH?size=32 resizes mixed sizes), ..."},
    )
    epochs: int | None = field(default=None, metadata={"help": "training epochs (default: the dataset profile's)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when available), cpu, cuda, cuda:1, ..."})
    seed: int = field(default=0, metadata={"help": "seed for training, attacks and sampling"})
    seeds: int = field(
        default=1,
        metadata={"help": "runs with seeds seed, seed+1, ...; the report gives each headline number as mean ± std"},
    )
    out: Path | None = field(default=None, metadata={"help": "run folder (default: runs/<recipe>-<dataset>)"})
    root: Path | None = field(default=None, metadata={"help": "dataset root (default: $ROBUSTKIT_DATA or ~/.cache/robustkit/data)"})
    download: bool = field(
        default=False, metadata={"help": "download what is missing: the dataset, and a named --model's pretrained weights"}
    )
    limit: int | None = field(default=None, metadata={"help": "number of test images (default: the profile's)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing run folder"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    model: str | None = field(
        default=None,
        metadata={
            "help": "your classifier, used instead of training one: module:factory (with --weights), or by name "
            "robustbench:NAME, timm:NAME, torchvision:NAME"
        },
    )
    weights: Path | None = field(
        default=None,
        metadata={"help": "your classifier's file: state_dict (with --model), TorchScript or robustkit checkpoint"},
    )
    unsafe_pickle: bool = field(
        default=False, metadata={"help": "allow a whole pickled module in --weights (loading it runs code from the file)"}
    )
    threat_model: str | None = field(
        default=None,
        metadata={"help": "which RobustBench zoo a robustbench:NAME model comes from: Linf (default), L2, corruptions"},
    )
    model_dir: Path | None = field(
        default=None,
        metadata={"help": "RobustBench's MODEL_DIR (<dataset>/<threat_model>/<NAME>.pt; default ~/.cache/robustkit/robustbench)"},
    )
    num_classes: int | None = field(default=None, metadata={"help": "give your model a new, untrained head with this many classes"})
    cache: bool | Path = field(default=True, metadata={"help": "model cache: True, False or a folder", "cli": False})


@dataclass
class Context:
    """A recipe's loaded data, training config, run folder and model factory."""

    name: str
    options: RecipeOptions
    train: ImageSet
    test: ImageSet
    profile: Profile
    config: TrainConfig
    folder: RunFolder
    models: dict[str, Any] = field(default_factory=dict)
    run: Stage | None = None
    """The whole run's log line, written by `finish`: its time and its report."""

    @property
    def device(self) -> torch.device:
        return resolve_device(self.options.device)

    def stage(self, what: str, total: int | None = None, unit: str = "") -> Any:
        """``with ctx.stage("FGSM sweep", len(ctx.test)) as st:`` logs the recipe's stage (`robustkit.core.stages`)."""
        return stage(f"{self.name}: {what}", total, unit)

    def classifier(self, arch: str | None = None, **config_changes: Any) -> nn.Module:
        """The standard classifier for this dataset (trained once, then from the cache), or the
        user's own (``--model`` / ``--weights``) when one is given."""
        o = self.options
        if arch is None and not config_changes and (o.model or o.weights):
            from ..core.checks import inspect_model
            from ..modelling.loading import load_model

            model = load_model(
                o.model, weights=o.weights, num_classes=o.num_classes, dataset=o.dataset, threat_model=o.threat_model,
                model_dir=o.model_dir, download=o.download, unsafe_pickle=o.unsafe_pickle, device=self.device,
            )  # fmt: skip
            classes = inspect_model(model, self.test.x[:1])
            if classes != self.test.info.num_classes:
                raise ValueError(
                    f"your model has {classes} outputs but {o.dataset} has {self.test.info.num_classes} classes"
                )
            self.models["user"] = {"model": o.model, "weights": None if o.weights is None else str(o.weights)}
            return model
        arch = arch or self.profile.arch
        config = dataclasses.replace(self.config, **config_changes)
        model, meta = train_model(  # training logs its epochs; a model from the cache logs nothing (it is instant)
            model_spec(arch, self.train.info),
            self.train,
            config,
            cache=self.options.cache,
            device=self.device,
            progress=self.options.progress,
        )
        self.models[f"{arch}"] = {"cache": meta.get("cache"), "cached": meta.get("cached")}
        return model

    def autoencoder_config(self, epochs: int | None = None) -> TrainConfig:
        """The classifier's config turned into a reconstruction one: no augmentation, no early
        stop, no weight decay (an L2 pull toward zero weights blurs reconstructions)."""
        return dataclasses.replace(
            self.config,
            objective="reconstruct",
            augment=False,
            patience=None,
            batch_size=128,
            weight_decay=0.0,
            epochs=epochs or self.config.epochs,
        )

    def robust_classifier(
        self,
        model: nn.Module,
        eps: float | str,
        *,
        random_start: bool = True,
        targeted: bool = False,
        fallback_steps: int | None = 7,
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Adversarial training at ``eps`` with a monitor, and what happened.

        FGSM (from a random start unless ``random_start=False``: Wong et al. 2020) makes the
        training examples; 256 training images are monitored every epoch (clean, FGSM, PGD
        accuracy). When the monitor shows catastrophic overfitting and ``fallback_steps`` is
        set, the model is trained again with PGD of that many steps, and that one is returned.
        The record says which attack trained the returned model (``used``), each run's attack,
        verdict and history (``runs``), whether the fallback ran, and the models (``models``,
        one per run; not JSON).
        """
        from ..defenses.training import overfitting_verdict
        from ..registry import attack, defense

        def train(atk: Any, rs: bool) -> tuple[nn.Module, dict[str, Any]]:
            trainer = defense(
                "adversarial_training",
                attack=atk,
                random_start=rs,
                targeted=targeted,
                train_config=self.config,
                monitor=self.train.take(256),
                cache=self.options.cache,
                progress=self.options.progress,
            )
            net = trainer.apply(model, self.train)
            label = f"FGSM{' with random start' if rs else ''}" if atk.name == "fgsm" else f"PGD-{atk.params['steps']}"
            verdict = overfitting_verdict(trainer.history)
            return net, {"attack": label, "verdict": verdict, "history": trainer.history}

        robust, first = train(attack("fgsm", eps=eps), random_start)
        record: dict[str, Any] = {"runs": [first], "used": first["attack"], "fallback": False, "models": [robust]}
        if first["verdict"]["overfitting"] and fallback_steps:
            robust, second = train(attack("pgd", eps=eps, steps=fallback_steps), False)
            record.update(runs=[first, second], used=second["attack"], fallback=True, models=[record["models"][0], robust])
        return robust, record

    def load(self, name: str, **kwargs: Any) -> ImageSet:
        """Another dataset (an OOD set), with the recipe's root and download options."""
        return in_memory(load_dataset(name, root=self.options.root, download=self.options.download, **kwargs), "a recipe")


def default_classifier(
    train: ImageSet, seed: int = 0, device: str | torch.device = "auto", progress: bool = True, cache: bool | Path = True
) -> tuple[nn.Module, dict[str, Any]]:
    """robustkit's standard classifier for ``train``: its profile's architecture and training,
    trained once and then loaded from the model cache (what a recipe trains when no --model is
    given). Returns the model and a record (arch, epochs, seed, cache path, cached or not).

    Under an initialised torch.distributed group (``torchrun``) with the cache on, only rank 0
    trains (or loads) the model; the other ranks wait for it, then load rank 0's cache file, and
    every rank returns rank 0's record. Without a cache every rank trains the same seeded model.
    """
    profile = profile_for(train)
    config = dataclasses.replace(profile.train, seed=seed)
    spec = model_spec(profile.arch, train.info)
    models: list[nn.Module] = []

    def fit(show: bool) -> dict[str, Any]:
        model, meta = train_model(spec, train, config, cache=cache, device=resolve_device(device), progress=show)
        models.append(model)
        return {"arch": profile.arch, "epochs": config.epochs, "seed": seed, "cache": meta.get("cache"), "cached": meta.get("cached")}

    if not cache:
        record = fit(progress)
        return models[-1], record
    record = on_first_rank(lambda: fit(progress))
    if not models:  # a rank other than 0: rank 0's file is in the cache now
        fit(False)
    return models[-1], record


def default_out(name: str, dataset: str) -> Path:
    """``runs/<recipe>-<dataset>``, the dataset name made safe for a folder name."""
    slug = dataset
    for char, sub in ((":", "-"), ("/", "_"), (",", "_"), ("?", "_"), ("=", "")):
        slug = slug.replace(char, sub)
    return Path("runs") / f"{name}-{slug}"


def start(name: str, options: RecipeOptions) -> Context:
    """Load the data, pick the profile, seed everything and open the run folder."""
    resolve_device(options.device)
    torch.manual_seed(options.seed)
    train = in_memory(load_dataset(options.dataset, "train", root=options.root, download=options.download), "a recipe")
    test = load_dataset(options.dataset, "test", root=options.root, download=options.download)
    profile = profile_for(train)
    test = in_memory(test.take(options.limit if options.limit is not None else profile.test_limit), "a recipe")
    config = dataclasses.replace(profile.train, seed=options.seed)
    if options.epochs is not None:
        config = dataclasses.replace(config, epochs=options.epochs)
    out = options.out or default_out(name, options.dataset)
    folder = RunFolder(out, overwrite=options.overwrite)
    run = Stage(name, unit="")  # its one line comes at the end (`finish`): a bad option found later stays the only line
    return Context(name, options, train, test, profile, config, folder, run=run)


def header(ctx: Context, title: str, summary: str) -> list[str]:
    """The opening lines of a report.md."""
    o = ctx.options
    return [
        f"# {title}",
        "",
        summary,
        "",
        f"Dataset `{o.dataset}` ({len(ctx.train)} train / {len(ctx.test)} test images"
        + (
            f": part of CIFAR-10, about {len(ctx.train) / 50_000:.0%} of its 50 000 training images"
            if o.dataset == "cifar10" and len(ctx.train) < 50_000
            else ""
        )
        + "), "
        + (
            f"your model `{o.model or o.weights}` (not trained here), "
            if (o.model or o.weights)
            else f"model `{ctx.profile.arch}`, {ctx.config.epochs} epoch{'s' if ctx.config.epochs != 1 else ''}, "
        )
        + f"seed {o.seed}, device `{ctx.device}`.",
        "",
    ]


def comparison(rows: list[tuple[str, Any, Any]], written_for: str) -> str:
    """A table of our numbers beside the write-up's (``None``: the write-up has none)."""
    note = (
        ""
        if written_for.startswith("cifar10")
        else ("\n\nThe write-up's numbers are for CIFAR-10; on this dataset they are context, not a target.")
    )
    return table(["quantity", "here", "write-up"], [[q, ours, ref] for q, ours, ref in rows]) + note


def look(text: str) -> str:
    """The paragraph beside a report's figures that says what to look at in them."""
    return f"**What to look at.** {text}"


def finish(ctx: Context, results: dict[str, Any], lines: list[str], checks: Sequence[Check] = ()) -> Path:
    """Write report.md (sanity checks before the findings) and results.json (with options,
    model cache info and the checks)."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(ctx.options).items()}
    results = {
        "recipe": ctx.name,
        "options": options,
        "train_config": dataclasses.asdict(ctx.config),
        "checks": sanity.as_records(checks),
        "images": {"train": len(ctx.train), "test": len(ctx.test)},
        **results,
        "models": ctx.models,
    }
    path = ctx.folder.finish(results, "\n".join(sanity.with_section(lines, checks)) + "\n")
    if ctx.run is not None:
        ctx.run.note = f"{len(ctx.train)} training and {len(ctx.test)} test images of {ctx.options.dataset}, report {path / 'report.md'}"
        ctx.run.end()
    return path


def attack_correct(attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Adversarial examples for the images ``model`` classifies correctly; the others unchanged.

    The usual definition of robust accuracy (an attacker leaves a misclassified image alone).
    It matters for attacks that ignore the label: DeepFool pushes an image across the nearest
    boundary of its *predicted* class, which can turn a misclassified image into a correct one.
    """
    from ..evaluate import attack_batches, predict

    correct = predict(model, x) == y.cpu()
    adv = x.clone()
    if correct.any():
        adv[correct] = attack_batches(attack, model, x[correct], y[correct])
    return adv


# ------------------------------------------------------------------ findings and spread


@dataclass(frozen=True)
class Headline:
    """One headline number of a recipe: its key in `numbers`, a label, the write-up's value
    for the same comparison (``None``: the write-up has none) and what that value is."""

    key: str
    label: str
    reference: float | None = None
    note: str = ""


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are not ``None`` (std ``None`` for one)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    mean = sum(present) / len(present)
    if len(present) == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))


def spread_text(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``0.612 ± 0.011`` (or just the mean when there is no spread)."""
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def headline_table(headlines: Sequence[Headline], numbers: dict[str, Any], dataset: str = "cifar10") -> str:
    """Our headline numbers beside the write-up's for the same comparison (``–``: it has none)."""
    rows = []
    for h in headlines:
        ref = "–" if h.reference is None else fmt(h.reference)
        rows.append([h.label, numbers.get(h.key), f"{ref} {h.note}".strip()])
    return comparison([(r[0], r[1], r[2]) for r in rows], dataset)


SEED_SPREAD = 0.1  # a share (accuracy, rate, AUROC) whose runs differ by more than this depends on the seed


def seed_dependence(headlines: Sequence[Headline], per_seed: Sequence[dict[str, Any]]) -> str | None:
    """A finding naming the headline shares (values in [0, 1]) whose runs differ by more than
    `SEED_SPREAD`, far beyond the sampling noise of a proportion over hundreds of test images
    (its standard error is at most 0.016 over 1000): their means describe no single model."""
    moved = []
    for h in headlines:
        values = [n.get(h.key) for n in per_seed]
        present = [v for v in values if v is not None]
        if len(present) > 1 and all(0 <= v <= 1 for v in present) and max(present) - min(present) > SEED_SPREAD:
            moved.append(f"{h.label} {', '.join(spread_text(v, None) for v in values)}")
    if not moved:
        return None
    return (
        f"These numbers depend on the seed (its runs differ by more than {SEED_SPREAD:g}): {'; '.join(moved)}. "
        "One run's value of them is not a finding, and the findings below describe their means, which no single "
        "trained model has: report them with their spread, and read each run's report."
    )


def over_seeds(
    name: str,
    title: str,
    options: RecipeOptions,
    once: Callable[[RecipeOptions], Path],
    numbers: Callable[[dict[str, Any]], dict[str, Any]],
    findings: Callable[[dict[str, Any]], list[str]],
    headlines: Callable[[dict[str, Any]], list[Headline]],
) -> Path:
    """Run ``once`` with seeds ``seed … seed+seeds-1`` and summarise the headline numbers.

    With ``options.seeds == 1`` this is ``once(options)``. Otherwise each run writes its own
    folder ``OUT/seed-<k>`` (trained models come from the shared cache when present), and
    ``OUT/report.md`` gives every headline number as mean ± std over the runs, with the
    findings recomputed from the means by the recipe's ``findings`` function, after a finding
    that names the numbers that depend on the seed (`seed_dependence`).
    """
    if options.seeds < 1:
        raise ValueError(f"seeds={options.seeds} must be ≥ 1")
    if options.seeds == 1:
        return once(options)
    folder = RunFolder(options.out or default_out(name, options.dataset), overwrite=options.overwrite)
    seeds = [options.seed + k for k in range(options.seeds)]
    per_seed: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    worst: dict[str, Check] = {}  # per check, the worst status over the seeds
    for k, seed in enumerate(seeds):
        run = dataclasses.replace(options, seed=seed, seeds=1, out=folder.path / f"seed-{seed}", overwrite=True)
        each = Stage(f"{name}: seed {seed} ({k + 1} of {len(seeds)})", unit="")
        results = load_results(once(run))
        each.end()
        first = first or results
        per_seed.append(numbers(results))
        for record in results.get("checks", []):
            check = Check(**{**record, "detail": f"seed {seed}: {record['detail']}"})
            known = worst.get(check.name)
            if known is None or sanity.STATUSES.index(check.status) > sanity.STATUSES.index(known.status):
                worst[check.name] = check
    keys = list(dict.fromkeys(k for n in per_seed for k in n))
    summary = {k: mean_std([n.get(k) for n in per_seed]) for k in keys}
    means = {k: v[0] for k, v in summary.items()}
    rows = []
    for h in headlines(first):
        mean, std = summary.get(h.key, (None, None))
        ref = "–" if h.reference is None else fmt(h.reference)
        rows.append([h.label, spread_text(mean, std), ", ".join(spread_text(n.get(h.key), None) for n in per_seed),
                     f"{ref} {h.note}".strip()])  # fmt: skip
    found = [s for s in [seed_dependence(headlines(first), per_seed)] if s] + findings(means)
    test_images = first.get("images", {}).get("test")
    each = f", each on the same {test_images} test images" if test_images is not None else ""
    lines = [
        f"# {title} — {len(seeds)} seeds",
        "",
        f"Dataset `{options.dataset}`; seeds {', '.join(map(str, seeds))} (each seeds the training, the "
        "attacks' random starts and any sampled data). Each run's own report: "
        + ", ".join(f"[seed {s}](seed-{s}/report.md)" for s in seeds)
        + ".",
        "",
        f"## Headline numbers (mean ± sample std over {len(seeds)} runs{each})",
        "",
        table(["headline", "mean ± std", "per seed", "write-up"], rows),
        "",
        "## Findings (from the means)",
        "",
        *[f"- {sentence}" for sentence in found],
    ]
    lines = sanity.with_section(lines, list(worst.values()))
    results = {
        "recipe": name,
        "seeds": seeds,
        "images": first.get("images"),
        "per_seed": per_seed,
        "mean": means,
        "std": {k: v[1] for k, v in summary.items()},
        "findings": found,
        "checks": sanity.as_records(list(worst.values())),
    }
    return folder.finish(results, "\n".join(lines) + "\n")


__all__ = [
    "Context",
    "Headline",
    "RecipeOptions",
    "attack_correct",
    "comparison",
    "finish",
    "fmt",
    "header",
    "headline_table",
    "look",
    "mean_std",
    "over_seeds",
    "spread_text",
    "start",
    "table",
]
