"""The single-model tasks behind ``robustkit attack``, ``ood`` and ``defend``.

They write run folders with the same machinery as the recipes (`RunFolder`, `table`,
`plots`), so the CLI only parses options and calls one function here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..evaluate import accuracy, attack_batches, eps_sweep, ood, predict, robust_accuracy
from ..evaluate.diagnose import diagnose, ood_auroc, ood_saturated
from ..modelling.data import load_dataset
from ..modelling.train import TrainConfig
from ..registry import attack as make_attack
from ..registry import defense_class, detector
from . import plots, sanity
from .report import RunFolder, table

OOD_HEADERS = ["detector", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"]


def attack_run(
    model: nn.Module,
    dataset: str,
    attack_name: str,
    params: dict[str, Any],
    out: Path,
    *,
    backend: str | None = None,
    sweep: str | None = None,
    limit: int = 512,
    overwrite: bool = False,
    root: Path | None = None,
) -> tuple[RunFolder, dict[str, Any]]:
    """Attack ``model`` on a test set: accuracy, an optional per-eps table, an image grid."""
    atk = make_attack(attack_name, backend, **params)
    data = load_dataset(dataset, "test", root=root, limit=limit)
    folder = RunFolder(out, overwrite=overwrite)
    adv = attack_batches(atk, model, data.x, data.y)
    clean, robust = accuracy(model, data.x, data.y), accuracy(model, adv, data.y)
    checks = diagnose(model, data, attack=atk).checks  # on a 256-image sample
    results: dict[str, Any] = {
        "attack": atk.describe(),
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "checks": sanity.as_records(checks),
    }
    lines = [f"# {atk!r} on {dataset}", "", table(["clean accuracy", "robust accuracy"], [[clean, robust]])]
    lines = [*lines[:2], *sanity.section(checks), *lines[2:]]
    if sweep:
        result = eps_sweep(atk, model, data.x, data.y, sweep.split(","))
        results["sweep"] = result.as_dict()
        plots.eps_curves({atk.name: (result.eps, result.accuracy)}, folder.figure("eps_curve"))
        rows = [list(r) for r in zip(result.eps, result.accuracy, strict=True)]
        lines += ["", table(["eps", "accuracy"], rows), "", "![eps](eps_curve.png)"]
    names = data.info.classes
    n = min(8, len(data))
    grid = [
        ("clean", data.x[:n].numpy(), [names[int(p)] for p in predict(model, data.x[:n])]),
        ("adversarial", adv[:n].numpy(), [names[int(p)] for p in predict(model, adv[:n])]),
    ]
    plots.image_grid(grid, folder.figure("examples"), title=repr(atk))
    lines += ["", "![examples](examples.png)"]
    folder.finish(results, "\n".join(lines) + "\n")
    return folder, results


def ood_run(
    model: nn.Module,
    id_data: str,
    ood_data: str,
    detectors: list[str],
    out: Path,
    *,
    limit: int | None = 1000,
    overwrite: bool = False,
    root: Path | None = None,
) -> tuple[RunFolder, list[list[Any]]]:
    """Score ID vs OOD test images with several detectors: metrics table, histograms, ROC and PR."""
    built = {name: detector(name) for name in detectors}  # bad names fail before any work
    train_set = load_dataset(id_data, "train", root=root)
    id_set = load_dataset(id_data, "test", root=root, limit=limit)
    kwargs = {"shape": id_set.info.shape, "size": len(id_set)} if ood_data == "fakedata" else {}
    ood_set = load_dataset(ood_data, "test", root=root, limit=limit, **kwargs)
    folder = RunFolder(out, overwrite=overwrite)
    results = ood({name: det.fit(model, train_set) for name, det in built.items()}, id_set.x, ood_set.x)
    scores, metrics, rows, checks = {}, {}, [], []
    for name, result in results.items():
        scores[name] = (result.id_scores, result.ood_scores)
        metrics[name] = result.metrics
        rows.append([name, *result.metrics.values()])
        checks += [sanity.labelled(ood_auroc(result), name), sanity.labelled(ood_saturated(*scores[name]), name)]
        plots.score_histogram(result.id_scores, result.ood_scores, folder.figure(f"hist_{name}"), title=name)
    plots.roc_pr(scores, folder.figure("roc"), folder.figure("pr"))
    figures = " ".join(f"![{f}]({f})" for f in folder.figures)
    lines = [f"# OOD: {id_data} vs {ood_data}", "", *sanity.section(checks), table(OOD_HEADERS, rows), "", figures]
    record = {"id": id_data, "ood": ood_data, "metrics": metrics, "checks": sanity.as_records(checks)}
    folder.finish(record, "\n".join(lines) + "\n")
    return folder, rows, record


def parse_value(text: str) -> Any:
    """A ``--param`` value: an int, a float, true/false, none, or the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def defend_run(
    model: nn.Module,
    defense_name: str,
    params: dict[str, Any],
    dataset: str,
    attack_name: str,
    eps: str,
    epochs: int,
    *,
    limit: int = 1000,
    root: Path | None = None,
) -> tuple[nn.Module, list[list[Any]]]:
    """Defend ``model``; returns the defended model and clean / attacked accuracy before and after."""
    cls = defense_class(defense_name)
    declared = {p.name for p in cls.declared()}
    atk = make_attack(attack_name, eps=eps)
    extra: dict[str, Any] = {}
    if "attack" in declared:
        extra["attack"] = atk
    if "train_config" in declared:
        extra["train_config"] = TrainConfig(epochs=epochs)
    defense = cls(**extra, **params)
    train_set = load_dataset(dataset, "train", root=root) if cls.needs_data else None
    test = load_dataset(dataset, "test", root=root, limit=limit)
    defended = defense.apply(model, train_set)
    rows = [
        [label, accuracy(m, test.x, test.y), robust_accuracy(atk, m, test.x, test.y)["accuracy"]]
        for label, m in (("undefended", model), ("defended", defended))
    ]
    return defended, rows
