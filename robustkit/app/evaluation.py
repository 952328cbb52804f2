"""``robustkit eval``: one model's clean accuracy, robust accuracy and OOD table in one run folder.

`eval_run` calls `robustkit.evaluate.benchmark` and writes results.json, report.md and the
figures with the machinery the recipes use (`RunFolder`, `table`, `plots`, `sanity`). The
folder is checked before the work and written only at the end, so an interrupted or failed
run leaves nothing half-written. `process_group` sets up ``torchrun`` jobs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks.base import NORMS
from ..core.checks import model_device, resolve_device
from ..evaluate.benchmark import GROUPS, Benchmark, benchmark, eps_text
from ..modelling.folders import imagenet_arg
from . import plots, sanity
from .report import RunFolder, table

METRICS = ["AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"]


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[int, int, str]]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) with no process group yet: start one (NCCL when
    the device is CUDA, else Gloo; the GPU is ``LOCAL_RANK``'s when ``device`` is auto or cuda)
    and destroy it at the end. Yields ``(rank, world size, device)``; outside torchrun
    ``(0, 1, device)``, and an existing group is used as it is."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if not dist.is_available() or world <= 1:
        yield 0, 1, device
        return
    if dist.is_initialized():
        yield dist.get_rank(), dist.get_world_size(), device
        return
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{local}"
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size(), device
    finally:
        dist.destroy_process_group()


def exit_together(code: int) -> None:
    """End every rank with exit status ``code`` (call it on every rank); ``SystemExit(code)``
    outside a process group.

    Under an initialised group of several ranks they first meet at a barrier, so no rank exits
    while rank 0 still writes the report. torchrun stops the other workers (SIGTERM) as soon as
    one exits non-zero, which would turn their status into -15; so each rank, once past the
    barrier, flushes its output and ends at once with ``os._exit(code)``, and a SIGTERM that
    arrives first ends it with ``code`` too. torchrun itself then exits 1 and lists each rank's
    ``exitcode : code`` (docs/evaluate.md)."""
    import signal
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(code))
        dist.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # the run is written; interpreter shutdown would leave torchrun time to SIGTERM this rank
    raise SystemExit(code)


STATE = "attack-state.jsonl"
"""The attack's record of finished batches in an eval run folder, until the run finishes (`robust_accuracy`)."""


def check_resumable(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse ``out`` before any work: as `RunFolder.check` without ``resume``; with it, ``out`` must
    hold an unfinished eval (its attack state and no results.json)."""
    states = sorted(out.glob("attack-state*.jsonl")) if out.is_dir() else []
    if not resume:
        if states and not (out / "results.json").exists() and not overwrite:
            raise FileExistsError(
                f"run folder {out} holds an interrupted eval ({states[0].name}); pass --resume to continue it, "
                "--overwrite to start again, or another --out"
            )
        RunFolder.check(out, overwrite)
        return
    if overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    if (out / "results.json").exists():
        raise FileExistsError(f"the eval in {out} finished (results.json is there); nothing to resume")
    if not states:
        raise FileNotFoundError(f"nothing to resume in {out}: no {STATE} (an eval writes it while it attacks)")


@dataclass
class ModelInfo:
    """What the report says about the model: a label and a JSON record."""

    label: str
    record: dict[str, Any]


def eval_run(
    model: nn.Module,
    about: ModelInfo,
    dataset: str,
    out: Path,
    *,
    attack: Any,
    ood: Sequence[str] | None,
    detectors: Sequence[str] | None,
    limit: int | None,
    seed: int,
    root: Path | None,
    download: bool,
    overwrite: bool = False,
    progress: bool = True,
    write: bool = True,
    options: dict[str, Any] | None = None,
    corruptions: bool = False,
    resume: bool = False,
    batch_size: int | None = None,
    adaptive: str = "auto",
    adaptive_budget: float = 5.0,
) -> tuple[Path | None, dict[str, Any], Benchmark]:
    """Benchmark ``model`` and (when ``write``) write the run folder ``out``; returns the folder
    (``None`` when not written), the results.json record and the `Benchmark`.

    While it attacks, the folder holds only the attack's state (`STATE`, one per torchrun rank);
    ``resume`` continues from it after an interruption. The state is deleted once results.json is written."""
    if write:
        check_resumable(out, overwrite, resume)  # before the work
        if overwrite:
            for stale in out.glob("attack-state*.jsonl"):
                stale.unlink()
    bench = benchmark(
        model, dataset, attack=attack, ood=ood, detectors=detectors, limit=limit, seed=seed, root=root,
        download=download, progress=progress, state=out / STATE, batch_size=batch_size, adaptive=adaptive,
        adaptive_budget=adaptive_budget,
    )  # fmt: skip
    results = {
        "command": "eval",
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in (options or {}).items()},
        "model": about.record,
        **bench.as_dict(),
        "checks": sanity.as_records(bench.final_checks),  # judged on the reported number (--strict)
    }
    if bench.adaptive is not None:
        results["adaptive"]["first_checks"] = sanity.as_records(bench.checks)
    corrupted = None
    if corruptions:  # Hendrycks & Dietterich 2019, on the same test images (robustkit.evaluate.corruptions)
        from ..evaluate.corruptions import corruption_benchmark

        per_batch = {} if batch_size is None else {"batch_size": batch_size}
        corrupted = corruption_benchmark(model, dataset, limit=limit, seed=seed, root=root, download=download, **per_batch)
        results["corruptions"] = corrupted.as_dict()
    if not write:
        return None, results, bench
    folder = RunFolder(out, overwrite=True)  # checked above: empty, overwritten, or this run's own state
    figures = _figures(bench, folder)
    lines = report_lines(bench, about, str(model_device(model)), figures)
    if corrupted is not None:
        grid = {c: {str(s): a for s, a in row.items()} for c, row in corrupted.accuracy.items()}
        plots.accuracy_heatmap(grid, folder.figure("corruptions"), title=f"accuracy ({corrupted.images} images)",
                               row_title="corruption", column_title="severity")  # fmt: skip
        lines += corrupted.markdown("corruptions.png")
    folder.finish(results, "\n".join(lines) + "\n")
    for state in out.glob("attack-state*.jsonl"):
        state.unlink()
    return folder.path, results, bench


def _figures(bench: Benchmark, folder: RunFolder) -> list[str]:
    """An AUROC bar chart over sets and detectors, and each set's score histograms for the
    detector with the best mean AUROC."""
    if not bench.ood:
        return []
    auroc: dict[str, dict[str, float]] = {}
    for r in bench.ood:
        group = f"{r['group']} stand-in" if r.get("stands_in_for") else r["group"]
        auroc.setdefault(f"{r['set']} ({group})", {})[r["detector"]] = r["metrics"]["AUROC"]
    plots.auroc_bars(auroc, folder.figure("ood_auroc"), title=f"OOD detection against {bench.dataset}")
    best = best_detector(bench)
    for name, per_detector in bench.scores.items():
        id_scores, ood_scores = per_detector[best]
        slug = "".join(ch if ch.isalnum() else "_" for ch in name)
        plots.score_histogram(id_scores, ood_scores, folder.figure(f"hist_{slug}"), title=f"{best}: {bench.dataset} vs {name}")
    return list(folder.figures)


def best_detector(bench: Benchmark) -> str:
    """The detector with the highest AUROC averaged over every OOD set."""
    mean = {d: sum(r["metrics"]["AUROC"] for r in bench.ood if r["detector"] == d) for d in bench.detectors}
    return max(mean, key=lambda d: mean[d])


def report_lines(bench: Benchmark, about: ModelInfo, device: str, figures: Sequence[str] = ()) -> list[str]:
    """report.md: the header, sanity checks, the accuracy table and the OOD tables."""
    atk = bench.attack
    norm = NORMS[atk["norm"]]
    threat = f"{norm}, ε = {eps_text(atk['eps'], atk['norm'])}"
    params = ", ".join(
        f"{k}={v}"
        for k, v in atk.items()
        if k not in ("name", "backend", "norm", "eps", "label", "log", "resumed") and v is not None and v != []
    )
    limited = bench.options.get("limit") is not None
    lines = [
        f"# Evaluation of {about.label} on {bench.dataset}",
        "",
        "Clean accuracy, robust accuracy under a threat model, and OOD detection against near and far OOD sets, "
        "as RobustBench (Croce et al. 2021) and OpenOOD v1.5 (Zhang et al. 2023) report them.",
        "",
        f"{bench.n} test images{' (--limit: the first ones)' if limited else ''}, seed {bench.options['seed']}, "
        f"device `{device}`.",
        "",
        "## Accuracy",
        "",
        table(
            ["clean accuracy", "robust accuracy", "threat model", "attack"],
            [[f"{bench.clean_accuracy:.3f}", f"{bench.robust_accuracy:.3f}", threat,
              f"{atk['label']}{f': {params}' if params else ''}"]],
        ),
        "",
        "An image counts as robust when the model classifies it correctly and the attack, run on every correctly "
        "classified image, does not change that (RobustBench's definition: robust accuracy ≤ clean accuracy).",
        "",
        f"Speed: {bench.n} test images in {bench.seconds.get('attack', 0.0):.1f} s of clean and robust accuracy "
        f"({bench.images_per_second:.3g} images per second on `{device}`, images read batch by batch); the whole "
        f"evaluation, checks and OOD included, took {sum(bench.seconds.values()):.1f} s.",
    ]
    lines += adaptive_lines(bench)
    if len(atk.get("log") or []) > 1:
        lines += [
            "",
            f"Accuracy on the {bench.n} images after each attack of the suite, run in turn on the images still "
            "classified correctly (the official AutoAttack's log):",
            "",
            table(["after", "accuracy"], [["clean", f"{bench.clean_accuracy:.3f}"]]
                  + [[row["attack"], f"{row['accuracy']:.3f}"] for row in atk["log"]]),
        ]
    if atk.get("resumed"):
        lines += ["", f"This run resumed an interrupted one: {atk['resumed']} image attacks were read back from its state file."]
    standard = atk["name"] == "autoattack" and atk["backend"] == "autoattack" and atk.get("version") == "standard"
    if bench.dataset == "cifar10" and (not standard or limited or threat not in ("L∞, ε = 8/255", "L2, ε = 0.5")):
        lines += [
            "",
            "RobustBench's CIFAR-10 leaderboards run the official AutoAttack (standard) at ε = 8/255 (L∞) or 0.5 (L2) "
            "on all 10 000 test images; this run differs, so compare with care.",
        ]
    base, _, arg = bench.dataset.partition(":")
    listed = base == "imagenet" and imagenet_arg(arg)[0] == "robustbench"
    if base == "imagenet" and (not standard or threat != "L∞, ε = 4/255" or not listed or bench.n != 5000):
        lines += [
            "",
            "RobustBench's ImageNet leaderboard runs the official AutoAttack (standard) at ε = 4/255 (L∞) on its 5000 "
            "validation images (`--dataset imagenet:robustbench`, no --limit); this run differs, so compare with care.",
        ]
    lines += ["", "## OOD detection", ""]
    if not bench.ood:
        lines += ["No OOD set could be evaluated (see below).", ""]
    else:
        lines += [
            f"Detectors: {', '.join(f'`{d}`' for d in bench.detectors)}, fitted on the ID training data. Metrics treat OOD "
            "as the positive class: higher AUROC and AUPR, lower FPR at 95% TPR are better; AUROC 0.5 is chance. "
            "Near OOD shares the ID set's low-level statistics and differs in meaning, far OOD differs in both "
            "(OpenOOD v1.5).",
            "",
            "### Means over each group's sets",
            "",
        ]
        means = bench.means()
        groups = [g for g in GROUPS if g in means]
        headers = ["detector"] + [f"{bench.group_label(g)} {m}" for g in groups for m in ("AUROC", "FPR95TPR")]
        rows = [[d] + [means[g][d][m] for g in groups for m in ("AUROC", "FPR95TPR")] for d in bench.detectors]
        lines += [table(headers, rows), ""]
        for group in groups:
            sets = [s["name"] for s in bench.ood_sets if s["group"] == group]
            replaced = [n for s in bench.ood_sets if s["group"] == group for n in s.get("stands_in_for", [])]
            if replaced:  # the far fallback: say what the numbers are of
                lines += [f"### {group.capitalize()} OOD: {', '.join(sets)}, standing in for {', '.join(replaced)}", "",
                          f"None of the default {group}-OOD sets ({', '.join(replaced)}) could be loaded, so "
                          f"{', '.join(sets)} stands in for them: these rows say how well the detectors tell noise "
                          f"images from the ID images, not how they do on {group} OOD data.", ""]  # fmt: skip
            else:
                lines += [f"### {group.capitalize()} OOD: {', '.join(sets)}", ""]
            rows = [[r["set"], r["detector"], *(r["metrics"][m] for m in METRICS)] for r in bench.ood if r["group"] == group]
            lines += [table(["set", "detector", *METRICS], rows), ""]
        sizes = ", ".join(f"{s['name']} {s['n']}" for s in bench.ood_sets)
        lines += [f"Images per OOD set (a seeded sample when --limit is given): {sizes}.", ""]
    if bench.skipped:
        lines += ["### Not evaluated", ""]
        lines += [f"- `{name}`: {why}" for name, why in bench.skipped.items()]
        lines.append("")
    if figures:
        lines += ["## Figures", "", *(f"![{f}]({f})" for f in figures), ""]
        if any(f.startswith("hist_") for f in figures):
            lines += [f"The histograms show `{best_detector(bench)}`, the detector with the best mean AUROC.", ""]
    lines = sanity.with_section(lines, bench.final_checks)
    a = bench.adaptive
    if a is not None and a.answered and "## Sanity checks" in lines:  # the verdict judges the final number: say so
        at = lines.index("## Sanity checks") + 4  # after the verdict and its blank line
        first = {c.name: c.status for c in bench.checks}
        failed = ", ".join(f"`{n}` ({first[n]})" if n in first else f"`{n}`" for n in a.answered)
        lines[at:at] = [f"These checks judge the adaptive number. On the first attack's number {failed} did not pass: "
                        "the attack was fooled, and the rungs of the adaptive evaluation below answered them.", ""]  # fmt: skip
    return lines


def adaptive_lines(bench: Benchmark) -> list[str]:
    """report.md's adaptive evaluation section for a benchmark (`record_lines`)."""
    return record_lines(bench.adaptive, bench.checks)


def record_lines(a: Any, first_checks: Sequence[Any] = ()) -> list[str]:
    """An adaptive evaluation (`robustkit.evaluate.adaptive.Adaptive`) for report.md: per rung its trigger, images
    attacked and broken, accuracy after and extra cost; the first number beside the adaptive one; the checks a rung
    answered (with their status on the first number, from ``first_checks``)."""
    if a is None:
        return []
    lines = ["", "### Adaptive evaluation", ""]
    if a.blocked:
        return [*lines, a.blocked]
    if not a.rungs:
        return [*lines, f"No check asked for an adaptive attack (`--adaptive {a.mode}`): the robust accuracy above is "
                        "the attack's own, at no extra cost."]  # fmt: skip
    ok = all(c.ok for c in a.checks)
    rows = [[r.rung, ", ".join(r.triggered_by), f"skipped: {r.skipped}", "", "", "", ""] if r.skipped else
            [r.rung, ", ".join(r.triggered_by), f"{r.attack}: {r.note}", str(r.images), str(r.broken), f"{r.accuracy:.3f}",
             f"{r.passes / max(a.cost['first'], 1):.2f}×"] for r in a.rungs]  # fmt: skip
    lines += [
        f"Robust accuracy {a.first_accuracy:.3f} under the attack alone, **{a.accuracy:.3f} adaptive** (per image, the worst "
        f"case over the attack and every rung that ran, on the images still robust; `--adaptive {a.mode}`, budget "
        f"{a.cost['budget']:g}× the attack's image forward passes, {a.cost['ratio']:.2f}× spent). Checks pass on the "
        f"final number: {'yes' if ok else 'no'}.",
        "",
        table(["rung", "triggered by", "attack", "images", "broken", "accuracy after", "extra cost"], rows),
    ]
    if a.answered:
        first = {c.name: c for c in first_checks}
        lines += ["", "Answered by the rungs (so not judged on the final number): "
                  + ", ".join(f"`{n}` ({first[n].status})" if n in first else f"`{n}`" for n in a.answered) + "."]  # fmt: skip
    return lines
