"""The single-model tasks behind ``robustkit attack``, ``ood`` and ``defend``.

They write run folders with the same machinery as the recipes (`RunFolder`, `table`,
`plots`), so the CLI only parses options and calls one function here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torch import nn

from ..attacks.base import Attack
from ..core.checks import parse_eps
from ..evaluate import accuracy, attack_batches, ood, predict, robust_accuracy
from ..evaluate.adaptive import check_budget, check_mode, escalate, first_evaluation
from ..evaluate.benchmark import eps_text
from ..evaluate.diagnose import diagnose, ood_auroc, ood_saturated
from ..modelling.data import in_memory, load_dataset
from ..modelling.train import TrainConfig
from ..registry import attack as make_attack
from ..registry import defense_class, detector
from . import plots, sanity
from .evaluation import record_lines
from .report import RunFolder, table

OOD_HEADERS = ["detector", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"]


NAMES = {
    "fgsm": "FGSM", "pgd": "PGD", "pgd_l2": "PGD", "eot_pgd": "EOT-PGD", "ddn": "DDN", "deepfool": "DeepFool",
    "autoattack": "AutoAttack", "square": "Square Attack", "square_l2": "Square Attack",
    **{f"{n}{s}": t for n, t in (("apgd", "APGD"), ("apgd_t", "APGD-T"), ("fab", "FAB"), ("fab_t", "FAB-T"))
       for s in ("", "_l2", "_l1")},
    "autoattack_l2": "AutoAttack", "autoattack_l1": "AutoAttack", "square_l1": "Square Attack",
    "cw_l2": "C&W", "ead": "EAD", "hop_skip_jump": "HopSkipJump", "hop_skip_jump_linf": "HopSkipJump",
}  # fmt: skip


def attack_title(atk: Attack) -> str:
    """``PGD L∞ at eps 8/255, 10 steps (reference backend)``: an attack as a report names it."""
    text = f"{NAMES.get(atk.name, atk.name)} {atk.norm_label()}"
    if atk.eps is not None:
        text += f" at eps {eps_text(atk.eps, atk.norm)}"
    if atk.params.get("steps") is not None:
        text += f", {atk.params['steps']} steps"
    return f"{text} ({atk.backend} backend)"


@contextlib.contextmanager
def _stages(total: int, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A transient rich progress bar on stderr over ``total`` named stages: ``stage(label)`` starts the next
    one. Shown only when ``enabled`` and stderr is a terminal."""
    import rich
    from rich.console import Console
    from rich.progress import Progress

    shared = rich.get_console()  # on stderr once the CLI configured logging: its log lines print above the bar
    console = shared if shared.stderr else Console(stderr=True)
    with Progress(console=console, transient=True, disable=not (enabled and console.is_terminal)) as bar:
        task = bar.add_task("", total=total)
        started = [False]

        def stage(label: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=label)

        yield stage


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
    model_label: str = "the model",
    progress: bool = False,
    download: bool = False,
    adaptive: str = "off",
    adaptive_budget: float = 5.0,
) -> tuple[RunFolder, dict[str, Any]]:
    """Attack ``model`` on a test set: clean and robust accuracy, an optional per-eps table, an image grid.

    Robust accuracy as RobustBench defines it (Croce et al. 2021): an image counts when the model
    classifies it correctly and the attack, run on every correctly classified image, does not
    change that. Each sweep row is the same quantity at its eps, on the same images; the row at
    the headline eps is the headline number itself (the attack's own: the adaptive evaluation, with
    ``adaptive`` auto or on, runs at the headline eps only, and then gives the headline number; see
    `robustkit.evaluate.adaptive`).
    """
    mode, budget = check_mode(adaptive), check_budget(adaptive_budget)
    atk = make_attack(attack_name, backend, **params)
    eps_values = [parse_eps(e) for e in sweep.split(",")] if sweep else []
    data = in_memory(load_dataset(dataset, "test", root=root, limit=limit, download=download), "robustkit attack")
    folder = RunFolder(out, overwrite=overwrite)
    n = len(data)
    cut: list[Any] = []  # gradients_available's failure when the attack found no gradient (adaptive only)
    with _stages(3 + len(eps_values) + (mode != "off"), progress) as stage:
        stage(f"{attack_title(atk)} on {n} images")
        if mode == "off":
            result, passes = robust_accuracy(atk, model, data.x, data.y), 0
        else:
            result, passes, cut = first_evaluation(atk, model, data.x, data.y, mode=mode)
        clean, robust = result["clean_accuracy"], result["accuracy"]
        first_robust = robust  # the sweep's row at the headline eps: the attack's own number, as its other rows
        stage("sanity checks")
        diagnosis = diagnose(model, data, attack=atk)  # on a seeded sample of 256 images
        checks = diagnosis.checks
        record = None
        if mode != "off":
            stage("adaptive evaluation")
            first_checks = [*checks, *(c for c in cut if c.name not in {k.name for k in checks})]
            record = escalate(atk, model, data.x, data.y, result.survivors or [], first_checks, first_accuracy=robust,
                              first_passes=passes, mode=mode, budget=budget, seed=atk.seed or 0)  # fmt: skip
            robust, checks = record.accuracy, record.checks
        title = f"{attack_title(atk)} on {n} {dataset} test images, model {model_label}"
        results: dict[str, Any] = {
            "attack": atk.describe(),
            "images": n,
            "model": model_label,
            "clean_accuracy": clean,
            "robust_accuracy": robust,
            "checks": sanity.as_records(checks),  # with the adaptive evaluation: judged on its number (--strict)
        }
        if record is not None:
            results["adaptive"] = {**record.as_dict(), "first_checks": sanity.as_records(diagnosis.checks)}
        params_text = ", ".join(
            f"{k}={eps_text(v, atk.norm) if k == 'eps' and v is not None else v}" for k, v in atk.params.items()
        )
        lines = [f"# {title}", "", f"Attack parameters: {params_text}.", ""]
        if checks:
            lines += [
                *sanity.section(checks),
                (
                    f"The checks ran on a seeded sample of {diagnosis.sample} of the {n} images"
                    if diagnosis.sample < n
                    else f"The checks ran on these {n} images"
                )
                + ", attacking every image (correctly classified or not) in their own runs, so the accuracies they "
                "quote may differ from the tables below.",
                "",
            ]
        lines += [
            f"## Accuracy on {n} test images",
            "",
            table(["images", "clean accuracy", "robust accuracy"], [[n, clean, robust]]),
            "",
            "An image counts as robust when the model classifies it correctly and the attack, run on every "
            "correctly classified image, does not change that (RobustBench's definition: robust accuracy ≤ clean "
            "accuracy).",
            *record_lines(record, diagnosis.checks),
        ]
        if eps_values:
            accuracies = []
            for eps in eps_values:
                stage(f"sweep: eps {eps_text(eps, atk.norm)}")
                if atk.eps is not None and math.isclose(eps, atk.eps, rel_tol=1e-9, abs_tol=1e-12):
                    accuracies.append(first_robust)  # the headline run: one quantity, one value
                elif eps == 0:
                    accuracies.append(clean)  # no perturbation: robust accuracy is clean accuracy
                else:
                    accuracies.append(robust_accuracy(atk.with_params(eps=eps), model, data.x, data.y)["accuracy"])
            results["sweep"] = {"eps": eps_values, "accuracy": accuracies, "images": n}
            plots.eps_curves({atk.name: (eps_values, accuracies)}, folder.figure("eps_curve"))
            rows = [[eps_text(e, atk.norm), n, a] for e, a in zip(eps_values, accuracies, strict=True)]
            lines += [
                "",
                f"## Robust accuracy against eps on the same {n} images",
                "",
                table(["eps", "images", "robust accuracy"], rows),
                "",
                "Each row attacks the same images with the same attack at its eps; a row at the headline eps is "
                "the headline number.",
                "",
                "![eps](eps_curve.png)",
            ]
        stage("figures")
        names = data.info.classes
        k = min(8, n)
        if cut:  # the attack cannot run on this model: the grid shows the clean images only
            plots.image_grid([("clean", data.x[:k].numpy(), [names[int(p)] for p in predict(model, data.x[:k])])],
                             folder.figure("examples"), title=attack_title(atk))  # fmt: skip
            lines += ["", f"## The first {k} images", "", "![examples](examples.png)"]
            folder.finish(results, "\n".join(lines) + "\n")
            return folder, results
        adv = attack_batches(atk, model, data.x[:k], data.y[:k])  # image i attacked as in the headline run
        grid = [
            ("clean", data.x[:k].numpy(), [names[int(p)] for p in predict(model, data.x[:k])]),
            ("adversarial", adv.numpy(), [names[int(p)] for p in predict(model, adv)]),
        ]
        plots.image_grid(grid, folder.figure("examples"), title=attack_title(atk))
        lines += ["", f"## The first {k} images, clean and attacked", "", "![examples](examples.png)"]
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
    download: bool = False,
) -> tuple[RunFolder, list[list[Any]], dict[str, Any]]:
    """Score ID vs OOD test images with several detectors: metrics table, histograms, ROC and PR."""
    built = {name: detector(name) for name in detectors}  # bad names fail before any work
    train_set = in_memory(load_dataset(id_data, "train", root=root, download=download), "robustkit ood (fitting on the train split)")
    id_set = in_memory(load_dataset(id_data, "test", root=root, limit=limit, download=download), "robustkit ood")
    kwargs = {"shape": id_set.info.shape, "size": len(id_set)} if ood_data == "fakedata" else {}
    ood_set = in_memory(load_dataset(ood_data, "test", root=root, limit=limit, download=download, **kwargs), "robustkit ood")
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
    images = {"id": len(id_set), "ood": len(ood_set), "train": len(train_set)}
    counts = (
        f"{images['id']} ID test images ({id_data}) against {images['ood']} OOD images ({ood_data}); the detectors "
        f"were fitted on {images['train']} ID training images. OOD is the positive class."
    )
    lines = [
        f"# OOD: {id_data} vs {ood_data}",
        "",
        counts,
        "",
        *sanity.section(checks),
        f"## Detectors on {images['id']} ID and {images['ood']} OOD images",
        "",
        table(OOD_HEADERS, rows),
        "",
        figures,
    ]
    record = {"id": id_data, "ood": ood_data, "images": images, "metrics": metrics, "checks": sanity.as_records(checks)}
    folder.finish(record, "\n".join(lines) + "\n")
    return folder, rows, record


def parse_value(text: str) -> Any:
    """A ``--param`` value: an int, a float, true/false, none, the string itself, or, with commas,
    a list of such values (``attacks=apgd-ce,apgd-t``)."""
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part.strip()]
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
    download: bool = False,
) -> tuple[nn.Module, list[list[Any]]]:
    """Defend ``model``; returns the defended model and, before and after, the number of test
    images and the clean and attacked accuracy on them."""
    cls = defense_class(defense_name)
    declared = {p.name for p in cls.declared()}
    atk = make_attack(attack_name, eps=eps)
    extra: dict[str, Any] = {}
    if "attack" in declared:
        extra["attack"] = atk
    if "train_config" in declared:
        extra["train_config"] = TrainConfig(epochs=epochs)
    defense = cls(**extra, **params)
    train_set = in_memory(load_dataset(dataset, "train", root=root, download=download), "robustkit defend") if cls.needs_data else None
    test = in_memory(load_dataset(dataset, "test", root=root, limit=limit, download=download), "robustkit defend")
    defended = defense.apply(model, train_set)
    rows = [
        [label, len(test), accuracy(m, test.x, test.y), robust_accuracy(atk, m, test.x, test.y)["accuracy"]]
        for label, m in (("undefended", model), ("defended", defended))
    ]
    return defended, rows
