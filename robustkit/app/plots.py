"""Figures (matplotlib, Agg backend), each saved atomically as PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..core.files import atomic_path


def _figure(ncols: int = 1, size: tuple[float, float] = (5.0, 3.6)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(size[0] * ncols, size[1]), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def score_histogram(id_scores: np.ndarray, ood_scores: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Overlaid ID / OOD histograms of a detector's scores."""
    plt, fig, (ax,) = _figure()
    values = np.concatenate([id_scores, ood_scores]).astype(np.float64)
    try:
        bins = np.histogram_bin_edges(values, bins=40)
    except ValueError:  # a range too small for 40 bins at the scores' magnitude (e.g. 1e9 ± 1e-6): one bin
        bins = np.array([values.min(), values.max() if values.max() > values.min() else values.min() + 1])
    ax.hist(id_scores, bins=bins, alpha=0.6, density=True, label="ID")
    ax.hist(ood_scores, bins=bins, alpha=0.6, density=True, label="OOD")
    ax.set(xlabel="score (higher = more likely OOD)", ylabel="density", title=title)
    ax.legend()
    return _save(plt, fig, path)


def sorted_scores(id_scores: np.ndarray, ood_scores: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Each set's scores sorted, against the fraction of the set (the write-ups' score curve)."""
    plt, fig, (ax,) = _figure()
    for scores, label in ((id_scores, "ID"), (ood_scores, "OOD")):
        ax.plot(np.linspace(0, 1, len(scores)), np.sort(scores), label=label)
    ax.set(xlabel="fraction of images", ylabel="sorted score", title=title)
    ax.legend()
    return _save(plt, fig, path)


def roc_pr(
    results: Mapping[str, tuple[np.ndarray, np.ndarray]], roc_path: str | Path, pr_path: str | Path, title: str = ""
) -> tuple[Path, Path]:
    """ROC and precision-recall (OOD positive) curves, one line per detector or model, one figure each."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt, fig, (ax,) = _figure()
    plt2, fig2, (ax2,) = _figure()
    for name, (id_scores, ood_scores) in results.items():
        labels = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
        scores = np.r_[id_scores, ood_scores]
        fpr, tpr, _ = roc_curve(labels, scores)
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.plot(fpr, tpr, label=name)
        ax2.plot(recall, precision, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate (ID flagged)", ylabel="true positive rate (OOD flagged)", title=f"ROC{': ' + title if title else ''}")
    ax2.set(xlabel="recall (OOD)", ylabel="precision (OOD)", title=f"precision-recall{': ' + title if title else ''}")
    ax.legend(fontsize=8)
    ax2.legend(fontsize=8)
    return _save(plt, fig, roc_path), _save(plt2, fig2, pr_path)


def eps_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = ""
) -> Path:
    """Accuracy against eps, one line per model or attack."""
    plt, fig, (ax,) = _figure()
    for label, (eps, acc) in curves.items():
        ax.plot(eps, acc, marker="o", label=label)
    ax.set(xlabel="ε (pixel units)", ylabel="accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def image_grid(rows: Sequence[tuple[str, np.ndarray, Sequence[str]]], path: str | Path, title: str = "") -> Path:
    """A grid of images: each row is ``(row label, N×C×H×W array in [0, 1], captions)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(images) for _, images, _ in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.5 * ncols + 0.8, 1.7 * len(rows)), squeeze=False)
    for r, (label, images, captions) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                image = np.asarray(images[c]).transpose(1, 2, 0)
                ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
                ax.set_title(captions[c], fontsize=7)
        axes[r][0].text(-0.15, 0.5, label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(plt, fig, path)


def auroc_bars(values: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """Grouped bars: one group per OOD set (``values`` keys), one bar per detector (AUROC)."""
    plt, fig, (ax,) = _figure(size=(max(5.0, 1.2 * len(values) + 3), 3.6))
    sets = list(values)
    detectors = list(dict.fromkeys(d for v in values.values() for d in v))
    width = 0.8 / max(1, len(detectors))
    for j, name in enumerate(detectors):
        xs = [i + (j - (len(detectors) - 1) / 2) * width for i in range(len(sets))]
        ax.bar(xs, [values[s].get(name, np.nan) for s in sets], width=width, label=name)
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    ax.set_xticks(range(len(sets)), sets, rotation=20 if len(sets) > 4 else 0)
    ax.set(ylabel="AUROC (OOD positive)", ylim=(0, 1.02), xlim=(-0.6, len(sets) - 0.4), title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)


RIGHT, WRONG = "#1a7f37", "#cf222e"  # panel titles: prediction equals the true label / does not


def prediction_grid(
    columns: Sequence[tuple[str, np.ndarray, Sequence[int]]],
    labels: Sequence[int],
    path: str | Path,
    classes: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """One row per image, one column per version of it, each panel titled with its prediction.

    ``columns`` holds ``(heading, N×C×H×W array in [0, 1], predicted class per image)``. A
    title is the predicted class (named by ``classes`` when given) with ✓ in green when it is
    the image's true label in ``labels``, ✗ in red when not.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    if any(len(images) != n or len(preds) != n for _, images, preds in columns):
        raise ValueError(f"every column needs {n} images and {n} predictions, one per label")
    name = (lambda k: classes[k]) if classes is not None else str
    fig, axes = plt.subplots(n, len(columns), figsize=(1.4 * len(columns) + 1.0, 1.45 * n + 0.5), squeeze=False)
    for c, (heading, images, preds) in enumerate(columns):
        for r in range(n):
            ax = axes[r][c]
            image = np.asarray(images[r]).transpose(1, 2, 0)
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            right = int(preds[r]) == int(labels[r])
            mark, colour = ("✓", RIGHT) if right else ("✗", WRONG)
            ax.set_title(f"{name(int(preds[r]))} {mark}", fontsize=8, color=colour)
        axes[0][c].text(0.5, 1.3, heading, transform=axes[0][c].transAxes, ha="center", va="bottom", fontsize=8,
                        weight="bold")  # fmt: skip
    for r in range(n):
        label = row_labels[r] if row_labels is not None else f"true: {name(int(labels[r]))}"
        axes[r][0].set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(plt, fig, path)


def accuracy_heatmap(
    values: Mapping[str, Mapping[str, float | None]],
    path: str | Path,
    title: str = "",
    row_title: str = "",
    column_title: str = "",
) -> Path:
    """Accuracy per row × column (``values[row][column]``) on a fixed 0–1 colour scale.

    Each cell is annotated with its accuracy to two decimals; a missing one (``None``) is grey
    and reads ``–``.
    """
    import textwrap

    import matplotlib

    rows = list(values)
    columns = list(dict.fromkeys(c for row in values.values() for c in row))
    grid = np.array([[np.nan if values[r].get(c) is None else values[r][c] for c in columns] for r in rows], float)
    plt, fig, (ax,) = _figure(size=(1.25 * len(columns) + 2.6, 0.55 * len(rows) + 1.9))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            v = grid[i, j]
            text, colour = ("–", "black") if np.isnan(v) else (f"{v:.2f}", "black" if v >= 0.5 else "white")
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=colour)
    ax.set_xticks(range(len(columns)), [textwrap.fill(c, 14) for c in columns], fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set(xlabel=column_title, ylabel=row_title, title=title)
    fig.colorbar(image, ax=ax, label="accuracy")
    return _save(plt, fig, path)


def certified_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]],
    path: str | Path,
    title: str = "",
    images: int | None = None,
) -> Path:
    """Certified accuracy against the L2 radius (solid), with the empirical robust accuracy of the same
    smoothed classifier (dashed, same colour) when given: one colour per label (e.g. per σ)."""
    plt, fig, (ax,) = _figure(size=(5.6, 3.8))
    for k, (label, (radii, certified, empirical)) in enumerate(curves.items()):
        colour = f"C{k}"
        ax.plot(radii, certified, marker="o", color=colour, label=f"{label}: certified")
        if empirical is not None:
            ax.plot(radii, empirical, marker="x", linestyle="--", color=colour, label=f"{label}: PGD-L2 (empirical)")
    ylabel = "accuracy" + (f" ({images} images)" if images else "")
    ax.set(xlabel="L2 radius (pixel units)", ylabel=ylabel, ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)
