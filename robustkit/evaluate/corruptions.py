"""Accuracy under the common corruptions, mCE and relative mCE (Hendrycks & Dietterich 2019)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.distributed import sum_counts, world
from ..core.stages import Stage
from ..modelling import corruptions as gen
from ..modelling.data import seeded_sample
from .checks.base import Check, warn_problems
from .checks.contract import contract_checks, model_learned
from .predictions import _outputs, _predict
from .robustness import _indexed_batches, _nonempty, _share

CHECK_SAMPLE = 256  # images the model's contract checks run on (a seeded sample)


@dataclass
class CorruptionResult:
    """`corruption_accuracy`'s numbers: accuracy per corruption and severity (``accuracy[c][s]``), clean
    accuracy, the image count, the source of the corrupted images, the corruptions skipped (with the
    reason) and, against a reference model, CE / mCE and relative CE / mCE."""

    accuracy: dict[str, dict[int, float]]
    clean_accuracy: float
    images: int
    source: str
    seed: int
    skipped: dict[str, str] = field(default_factory=dict)
    reference: CorruptionResult | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def corruptions(self) -> list[str]:
        return list(self.accuracy)

    @property
    def severities(self) -> list[int]:
        return sorted({s for row in self.accuracy.values() for s in row})

    @property
    def corruption_accuracy(self) -> dict[str, float]:
        """Accuracy per corruption, the mean over its severities."""
        return {c: sum(row.values()) / len(row) for c, row in self.accuracy.items()}

    @property
    def mean_accuracy(self) -> float:
        """Mean corruption accuracy: the mean over every corruption and severity evaluated."""
        values = [v for row in self.accuracy.values() for v in row.values()]
        return sum(values) / len(values) if values else math.nan

    def _errors(self) -> tuple[dict[str, float], dict[str, float]]:
        """CE_c and relative CE_c against ``reference`` (NaN where the reference's denominator is not positive)."""
        ref = self.reference
        if ref is None:
            return {}, {}
        tiny = 0.5 / max(1, self.images)  # less than one image: accuracies are counts over `images`
        ce, rel = {}, {}
        for c, row in self.accuracy.items():
            err = sum(1 - row[s] for s in row)
            ref_err = sum(1 - ref.accuracy[c][s] for s in row)
            ce[c] = err / ref_err if ref_err > tiny else math.nan
            gap = sum((1 - row[s]) - (1 - self.clean_accuracy) for s in row)
            ref_gap = sum((1 - ref.accuracy[c][s]) - (1 - ref.clean_accuracy) for s in row)
            rel[c] = gap / ref_gap if ref_gap > tiny else math.nan
        return ce, rel

    @property
    def ce(self) -> dict[str, float]:
        """Corruption error CE_c = Σ_s E_{s,c} / Σ_s E^ref_{s,c} (empty without a reference; NaN where the
        reference makes no error on c)."""
        return self._errors()[0]

    @property
    def relative_ce(self) -> dict[str, float]:
        """Relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^ref_{s,c} − E^ref_clean) (empty without a reference;
        NaN where the reference loses no accuracy to c, so the ratio is undefined)."""
        return self._errors()[1]

    @property
    def undefined(self) -> dict[str, list[str]]:
        """The corruptions left out of mCE (``ce``) and relative mCE (``relative_ce``): their denominator is ≤ 0."""
        ce, rel = self._errors()
        return {"ce": [c for c, v in ce.items() if math.isnan(v)], "relative_ce": [c for c, v in rel.items() if math.isnan(v)]}

    @property
    def mce(self) -> float | None:
        """mCE: the mean of CE_c over the corruptions where it is defined (`undefined` lists the others; None
        without a reference, NaN if it is defined for none)."""
        return _mean_defined(self.ce) if self.reference is not None else None

    @property
    def relative_mce(self) -> float | None:
        """Relative mCE: the mean of the relative CE_c where defined (`undefined` lists the others)."""
        return _mean_defined(self.relative_ce) if self.reference is not None else None

    def markdown(self, figure: str | None = None) -> list[str]:
        """A report section: the accuracy table (corruption × severity, with the mean), the source and skips."""
        levels = self.severities
        n = self.images
        lines = [
            f"## Common corruptions ({n} images)",
            "",
            f"Accuracy under the corruptions of Hendrycks & Dietterich 2019, severities {', '.join(map(str, levels))}, "
            f"on the same {n} test images as the clean accuracy ({self.clean_accuracy:.3f}). Images: {self.source}; "
            f"seed {self.seed}. Mean corruption accuracy {self.mean_accuracy:.3f}.",
            "",
            "| corruption | " + " | ".join(f"severity {s}" for s in levels) + " | mean |",
            "|---" * (len(levels) + 2) + "|",
        ]
        for c, row in self.accuracy.items():
            cells = " | ".join(f"{row[s]:.3f}" for s in levels)
            lines.append(f"| {c} | {cells} | {self.corruption_accuracy[c]:.3f} |")
        lines.append("")
        if self.reference is not None:
            mce, rel = self.mce, self.relative_mce
            lines += [f"mCE {mce:.3f}, relative mCE {rel:.3f} against the reference model (1 = as many errors).", ""]
        lines += [f"- `{c}` skipped: {why}." for c, why in self.skipped.items()]
        if self.skipped:
            lines.append("")
        if "CIFAR-10-C severity constants" in self.source:
            lines += [
                "On-the-fly images follow CIFAR-10-C's formulas and constants (made for 32×32 images) with "
                "robustkit's own random draws, ImageMagick's motion blur emulated and corrupt-tta's copies of the "
                "frost textures: close to CIFAR-10-C, not the published images, so compare with RobustBench's "
                "corruptions leaderboard (which uses the published files) with care; pass --root with the official "
                "`CIFAR-10-C/` folder for the published images.",
                "",
            ]
        if figure:
            lines += [
                f"![{figure}]({figure})",
                "",
                "**What to look at.** Each row of the heatmap is a corruption, each column a severity (1 mild to 5 "
                "strong), on a fixed 0–1 colour scale: a row that darkens quickly is a corruption the model is fragile to.",
                "",
            ]
        return lines

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accuracy": {c: {str(s): v for s, v in row.items()} for c, row in self.accuracy.items()},
            "corruption_accuracy": self.corruption_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "clean_accuracy": self.clean_accuracy,
            "images": self.images,
            "source": self.source,
            "seed": self.seed,
            "skipped": self.skipped,
            "checks": [c.as_dict() for c in self.checks],
        }
        if self.reference is not None:
            out.update(
                ce=self.ce,
                mce=self.mce,
                relative_ce=self.relative_ce,
                relative_mce=self.relative_mce,
                undefined=self.undefined,
                reference=self.reference.as_dict(),
            )
        return out


def _mean_defined(values: dict[str, float]) -> float:
    defined = [v for v in values.values() if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def _shape_of(x: Any) -> tuple[int, ...] | None:
    info = getattr(x, "info", None)
    if info is not None and hasattr(info, "shape"):
        return tuple(info.shape)
    data = getattr(x, "x", x[0] if isinstance(x, (tuple, list)) and x else x)
    return tuple(data.shape[1:]) if isinstance(data, torch.Tensor) else None


def default_constants(x: Any) -> str:
    """ImageNet-C's constants for data named ImageNet (``imagenet``, ``imagenet:robustbench``), else CIFAR-10-C's."""
    name = getattr(getattr(x, "info", None), "name", "")
    return "imagenet-c" if isinstance(name, str) and name.partition(":")[0] == "imagenet" else "cifar10-c"


def corruption_accuracy(
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    reference: nn.Module | CorruptionResult | None = None,
    files: str | Path | None = None,
    *,
    distributed: bool = True,
    constants: str | None = None,
) -> CorruptionResult:
    """Accuracy under the 15 common corruptions × 5 severities of CIFAR-10-C or ImageNet-C (Hendrycks & Dietterich 2019).

    ``x`` is a tensor (with ``y``), an ImageSet or a Dataset/DataLoader, streamed in batches.
    ``files``: a folder in the official CIFAR-10-C / CIFAR-100-C layout (``<corruption>.npy``,
    ``labels.npy``); its rows at the images' positions are used (``x`` must be the test set in its
    published order, or a prefix of it: the labels are checked); or ImageNet-C's extracted folders
    (``<corruption>/<severity>/<wnid>/<file>.JPEG``), read at the file names of ``x`` (a streamed
    ``load_dataset("imagenet")``). Without ``files`` the images are corrupted on the fly with the
    authors' formulas and ``constants`` (``"cifar10-c"`` or ``"imagenet-c"``; default ImageNet-C's for
    data named ImageNet, else CIFAR-10-C's; `robustkit.modelling.corruptions`), image i from a random
    stream seeded by ``(seed, corruption, severity, i)``: the same seed gives the same images for any
    batch size and under torch.distributed (each rank takes its share, as in `robust_accuracy`).
    Corruptions that do not apply to the image size are listed in ``skipped``.

    ``reference``: a model evaluated on the same corrupted images (or its `CorruptionResult` on the same
    data) for CE_c = Σ_s E_{s,c} / Σ_s E^ref_{s,c}, mCE (their mean), and relative CE / mCE, which
    subtract each model's clean error first (the paper's definitions; it uses AlexNet as reference).
    """
    names, levels = gen.check_names(corruptions, severities)
    if isinstance(reference, CorruptionResult):
        missing = [(c, s) for c in names for s in levels if s not in reference.accuracy.get(c, {})]
        if missing and not all(c in reference.skipped for c, _ in missing):
            raise ValueError(
                f"the reference result lacks {missing[:3]}...: evaluate it on the same corruptions and severities"
            )
    elif reference is not None and not isinstance(reference, nn.Module):
        raise TypeError(f"reference must be a model or a CorruptionResult, got {type(reference).__name__}")
    constants = default_constants(x) if constants is None else constants
    gen.corruption_set(constants)  # an unknown name fails here
    official = gen.official_files(files, names, x) if files is not None else None
    if official is not None:
        source = f"the official files in {official.folder} (published images, seed unused)"
        skipped: dict[str, str] = {}
    else:
        source = gen.source_line(constants)
        shape = _shape_of(x)
        skipped = gen.skipped_corruptions(shape, constants) if shape is not None else {}
    models = [model] + ([reference] if isinstance(reference, nn.Module) else [])
    rank, size = world(distributed)
    classes: list[int] = []

    def local() -> dict[str, int]:
        counts: dict[str, int] = {"total": 0}
        for m in range(len(models)):
            counts[f"{m}|clean"] = 0
            for c in names:
                for s in levels:
                    counts[f"{m}|{c}|{s}"] = 0
        # log lines: the time left after the first batch, then one line per corruption and one for all (`stage`)
        every = Stage("corruptions", _share(x, rank, size)).start(f"{len(names)} corruptions × {len(levels)} severities, {len(models)} model(s)")
        each = {c: Stage(f"corruption {c}", unit="corrupted images", interleaved=True) for c in names}
        for xb, yb, _, ib in _indexed_batches(model, x, y, batch_size, rank=rank, world=size):
            labels = yb.cpu()
            if not classes:
                classes.append(int(_outputs(model, xb[:1]).shape[1]))
            counts["total"] += len(xb)
            if official is not None:
                official.check_labels(labels, ib)
            else:
                skipped.update(gen.skipped_corruptions(tuple(xb.shape[1:]), constants))
            for m, net in enumerate(models):
                counts[f"{m}|clean"] += int((_predict(net, xb, batch_size) == labels).sum())
            for c in names:
                if c in skipped:
                    continue
                began = time.perf_counter()
                for s in levels:
                    if official is not None:
                        corrupted = official.read(c, s, ib).to(xb.dtype)
                        if corrupted.shape[1:] != xb.shape[1:]:
                            raise ValueError(
                                f"the official images are {tuple(corrupted.shape[1:])}, the data {tuple(xb.shape[1:])}"
                            )
                    else:
                        corrupted = gen.corrupt(xb, c, s, ib, seed, constants)
                    for m, net in enumerate(models):
                        counts[f"{m}|{c}|{s}"] += int((_predict(net, corrupted, batch_size) == labels).sum())
                each[c].spent(time.perf_counter() - began, len(xb) * len(levels))
            every.advance(len(xb))
        for c in [c for c in names if c not in skipped]:
            each[c].note = f"mean accuracy {sum(counts[f'0|{c}|{s}'] for s in levels) / max(1, each[c].done):.3f}"
            each[c].end()
        every.end()
        return counts

    counts = _nonempty(sum_counts(local, size))
    n = counts["total"]

    def result(m: int) -> CorruptionResult:
        acc = {c: {s: counts[f"{m}|{c}|{s}"] / n for s in levels} for c in names if c not in skipped}
        return CorruptionResult(acc, counts[f"{m}|clean"] / n, n, source, seed, dict(skipped))

    out = result(0)
    if isinstance(reference, nn.Module):
        out.reference = result(1)
    elif isinstance(reference, CorruptionResult):
        if reference.images != n:
            raise ValueError(f"the reference result counts {reference.images} images, this data {n}: use the same data")
        out.reference = reference
    if not out.accuracy:
        raise ValueError(f"no corruption applies to these images: {skipped}")
    out.checks.append(model_learned(out.clean_accuracy, classes[0] if classes else 10, n))
    xs, ys = seeded_sample(x if y is None else (x, y), CHECK_SAMPLE, seed)  # the rest of the model's contract
    out.checks += [c for c in contract_checks(model, xs, ys, seed=seed) if c.name != "model_learned"]
    warn_problems(out.checks)
    return out


def corruption_benchmark(
    model: nn.Module,
    dataset: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    download: bool = False,
    batch_size: int = 256,
) -> CorruptionResult:
    """`corruption_accuracy` on ``dataset``'s test split (the first ``limit`` images), reading the official
    ``CIFAR-10-C/``, ``CIFAR-100-C/`` or ``ImageNet-C/`` folder under ``root`` when it is there (``robustkit eval
    --corruptions``); ImageNet's are otherwise generated with ImageNet-C's constants."""
    from ..modelling.data import default_root, load_dataset

    data = load_dataset(dataset, "test", root=root, download=download, limit=limit)
    base = root if root is not None else default_root()
    # cifar100:bottle,clock is a subset, whose rows are not the published order; ImageNet-C is found by file name
    published = dataset in ("cifar10", "cifar100") or dataset.partition(":")[0] == "imagenet"
    files = gen.official_folder(dataset, base) if published else None
    return corruption_accuracy(model, data, seed=seed, batch_size=batch_size, files=files)
