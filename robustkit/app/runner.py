"""What every recipe shares: options, dataset profiles, cached models and the run folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.checks import resolve_device
from ..evaluate.diagnose import Check
from ..modelling.data import ImageSet, load_dataset
from ..modelling.models import model_spec
from ..modelling.train import TrainConfig, train_model
from . import sanity
from .report import RunFolder, fmt, table


@dataclass(frozen=True)
class Profile:
    """Defaults for one kind of dataset, chosen to run in reasonable time on a CPU."""

    arch: str
    train: TrainConfig
    test_limit: int | None
    eps: float  # the dataset's usual L∞ budget


PROFILES = {
    "small": Profile("small_cnn", TrainConfig(epochs=10, batch_size=64, lr=2e-3), None, 0.1),
    "mnist": Profile("small_cnn", TrainConfig(epochs=3, batch_size=128), 1000, 0.1),
    "natural": Profile(
        "cnn6",
        TrainConfig(epochs=15, batch_size=64, lr=1e-3, weight_decay=5e-4, augment=True, patience=3),
        1000,
        8 / 255,
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

    dataset: str = field(default="cifar10", metadata={"help": "digits (offline), cifar10, mnist, imagefolder:PATH, ..."})
    epochs: int | None = field(default=None, metadata={"help": "training epochs (default: the dataset profile's)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when available), cpu, cuda, cuda:1, ..."})
    seed: int = field(default=0, metadata={"help": "seed for training, attacks and sampling"})
    out: Path | None = field(default=None, metadata={"help": "run folder (default: runs/<recipe>-<dataset>)"})
    root: Path | None = field(default=None, metadata={"help": "dataset root (default: $ROBUSTKIT_DATA or ~/.cache/robustkit/data)"})
    download: bool = field(default=False, metadata={"help": "download the dataset if it is missing"})
    limit: int | None = field(default=None, metadata={"help": "number of test images (default: the profile's)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing run folder"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
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

    @property
    def device(self) -> torch.device:
        return resolve_device(self.options.device)

    def classifier(self, arch: str | None = None, **config_changes: Any) -> nn.Module:
        """The standard classifier for this dataset (trained once, then from the cache)."""
        arch = arch or self.profile.arch
        config = dataclasses.replace(self.config, **config_changes)
        model, meta = train_model(
            model_spec(arch, self.train.info),
            self.train,
            config,
            cache=self.options.cache,
            device=self.device,
            progress=self.options.progress,
        )
        self.models[f"{arch}"] = {"cache": meta.get("cache"), "cached": meta.get("cached")}
        return model

    def autoencoder_config(self) -> TrainConfig:
        return dataclasses.replace(self.config, objective="reconstruct", augment=False, patience=None, batch_size=128)

    def load(self, name: str, **kwargs: Any) -> ImageSet:
        """Another dataset (an OOD set), with the recipe's root and download options."""
        return load_dataset(name, root=self.options.root, download=self.options.download, **kwargs)


def start(name: str, options: RecipeOptions) -> Context:
    """Load the data, pick the profile, seed everything and open the run folder."""
    resolve_device(options.device)
    torch.manual_seed(options.seed)
    train = load_dataset(options.dataset, "train", root=options.root, download=options.download)
    test = load_dataset(options.dataset, "test", root=options.root, download=options.download)
    profile = profile_for(train)
    test = test.take(options.limit if options.limit is not None else profile.test_limit)
    config = dataclasses.replace(profile.train, seed=options.seed)
    if options.epochs is not None:
        config = dataclasses.replace(config, epochs=options.epochs)
    slug = options.dataset.replace(":", "-").replace("/", "_").replace(",", "_")
    out = options.out or Path("runs") / f"{name}-{slug}"
    folder = RunFolder(out, overwrite=options.overwrite)
    return Context(name, options, train, test, profile, config, folder)


def header(ctx: Context, title: str, summary: str) -> list[str]:
    """The opening lines of a report.md."""
    o = ctx.options
    return [
        f"# {title}",
        "",
        summary,
        "",
        f"Dataset `{o.dataset}` ({len(ctx.train)} train / {len(ctx.test)} test images), "
        f"model `{ctx.profile.arch}`, {ctx.config.epochs} epoch{'s' if ctx.config.epochs != 1 else ''}, "
        f"seed {o.seed}, device `{ctx.device}`.",
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


def finish(ctx: Context, results: dict[str, Any], lines: list[str], checks: Sequence[Check] = ()) -> Path:
    """Write report.md (sanity checks before the findings) and results.json (with options,
    model cache info and the checks)."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(ctx.options).items()}
    results = {
        "recipe": ctx.name,
        "options": options,
        "train_config": dataclasses.asdict(ctx.config),
        "checks": sanity.as_records(checks),
        **results,
        "models": ctx.models,
    }
    return ctx.folder.finish(results, "\n".join(sanity.with_section(lines, checks)) + "\n")


__all__ = ["Context", "RecipeOptions", "comparison", "finish", "fmt", "header", "start", "table"]
