"""Recipe 1 — OOD detection with classifier confidence and reconstruction error (the first two write-ups)."""

from pathlib import Path
from typing import Annotated

from robustkit.app import plots
from robustkit.app.findings import compare_aurocs
from robustkit.app.runner import (
    Headline,
    RecipeOptions,
    finish,
    header,
    headline_table,
    look,
    over_seeds,
    start,
    table,
)
from robustkit.app.sanity import labelled
from robustkit.detectors.reconstruction import ReconstructionError
from robustkit.evaluate import accuracy, model_learned, ood, ood_auroc, ood_saturated
from robustkit.registry import detector

NAME = "ood-baselines"
TITLE = "OOD baselines"
SUMMARY = "Max logit, max softmax, other pytorch-ood scores and autoencoder MSE: ID test vs OOD images."
ORDER = 1
DEFAULT_DATASET = "cifar10"
LOOK = (  # the report's paragraph beside the figures
    "In the ROC plot a score that tells ID from OOD images apart bends toward the top-left corner; the dotted "
    "diagonal is chance (AUROC 0.5), and a curve below it ranks OOD images as more in-distribution than ID ones. "
    "In each histogram look at how much the ID and OOD scores overlap: no threshold separates the overlap. The "
    "sorted-score curves show the same from another side: the further apart the two curves, the better the score "
    "separates, and a flat stretch means many images share one score (a saturated softmax)."
)
DETECTORS = ("max_logit", "max_softmax", "energy", "entropy", "odin", "mahalanobis", "vim", "knn")
REFERENCE = {  # (ood set family, detector, metric) -> write-up value
    ("fakedata", "max_logit", "AUROC"): 0.91,  # the first write-up: a CNN trained 50 epochs on CIFAR-10
    ("fakedata", "reconstruction", "AUROC"): 0.94,
    ("cifar100", "max_logit", "AUROC"): 0.63,  # the second: a 60%-accuracy CNN, CIFAR-100 bottle/clock/plate/telephone
    ("cifar100", "max_logit", "AUPR-IN"): 0.89,
}
CLOSE = 0.05  # |ours − write-up| up to this is "close"


def numbers(results: dict) -> dict[str, float | None]:
    """Clean accuracy, every score's AUROC, max logit's AUPR-IN (keys ``<score>/<metric>``), and the image
    counts ``n_id`` and ``n_ood``."""
    out: dict[str, float | None] = {"clean": results["clean_accuracy"]}
    for name, m in results["metrics"].items():
        out[f"{name}/AUROC"] = m["AUROC"]
    out["max_logit/AUPR-IN"] = results["metrics"]["max_logit"]["AUPR-IN"]
    out["n_id"], out["n_ood"] = results.get("n_id"), results.get("n_ood")
    return out


def findings(n: dict, family: str = "fakedata") -> list[str]:
    """The report's findings, computed from `numbers` alone (``family``: the OOD set's kind)."""
    aurocs = {k.split("/")[0]: v for k, v in n.items() if k.endswith("/AUROC") and v is not None}
    out = []
    best = max(aurocs, key=aurocs.__getitem__)
    counts = n.get("n_id"), n.get("n_ood")
    gaps = {d: compare_aurocs(v, aurocs[best], *counts) for d, v in aurocs.items() if d != best}
    tied = sorted((d for d, gap in gaps.items() if not gap.up), key=aurocs.__getitem__, reverse=True)
    sentence = f"The best separation comes from **{best}** (AUROC {aurocs[best]:.3f})"
    if tied and all(counts):
        listed = ", ".join(f"{d} {aurocs[d]:.3f}" for d in tied)
        sentence += (
            f", but {listed} {'is' if len(tied) == 1 else 'are'} within sampling noise of it "
            f"({gaps[tied[0]].noise()}), so this run does not rank {'it' if len(tied) == 1 else 'them'} below"
        )
    out.append(sentence + ".")
    inverted = sorted((d for d, v in aurocs.items() if v < 0.5), key=aurocs.__getitem__)
    if inverted:
        listed = ", ".join(f"{d} {aurocs[d]:.3f}" for d in inverted)
        out.append(
            f"AUROC below 0.5 for {listed}: these scores rank the OOD images as *more* in-distribution than "
            "the real test images, so thresholding them flags the wrong set. A ReLU classifier trained on natural "
            "images can be more confident on noise than on real data (Hein et al. 2019); a score below 0.5 is a failure of the "
            "score on this OOD set, not a detector with the sign flipped (the sign cannot be chosen after "
            "looking at the OOD data)."
        )
    else:
        out.append("Every score ranks the OOD images as less in-distribution than the test images (AUROC ≥ 0.5).")
    for (fam, det, metric), ref in REFERENCE.items():
        value = n.get(f"{det}/{metric}")
        if fam != family or value is None:
            continue
        if abs(value - ref) <= CLOSE:
            verdict = f"close to the write-up's {ref:.2f}"
        else:
            verdict = f"{'below' if value < ref else 'above'} the write-up's {ref:.2f} by {abs(value - ref):.2f}"
        out.append(f"{det} {metric} {value:.3f} is {verdict}.")
    return out


def headlines(results: dict) -> list[Headline]:
    """The headline numbers and the write-up's value for the same comparison."""
    family = results["ood_set"].split(":")[0]
    rows = [Headline("clean", "clean accuracy", 0.60 if family == "cifar100" else None)]
    rows += [
        Headline(f"{det}/{metric}", f"{det} {metric} vs {family}", ref)
        for (fam, det, metric), ref in REFERENCE.items()
        if fam == family
    ]
    rows += [Headline(f"{d}/AUROC", f"{d} AUROC") for d in ("energy", "mahalanobis", "knn")]
    return rows


def run(
    options: RecipeOptions,
    ood_set: Annotated[str, "OOD data set: fakedata, cifar100, cifar100:CLASS,CLASS, mnist, imagefolder:PATH"] = "fakedata",
) -> Path:
    """Train a classifier and an autoencoder on ID data, then score ID test vs OOD images."""
    family = ood_set.split(":")[0]
    return over_seeds(
        NAME, TITLE, options, lambda o: _once(o, ood_set), numbers, lambda n: findings(n, family), headlines
    )


def _once(options: RecipeOptions, ood_set: str) -> Path:
    ctx = start(NAME, options)
    model = ctx.classifier()
    kwargs = (
        {"shape": ctx.test.info.shape, "size": len(ctx.test), "seed": options.seed} if ood_set == "fakedata" else {}
    )
    outliers = ctx.load(ood_set, split="test", **kwargs)
    if outliers.info.shape != ctx.test.info.shape:
        raise ValueError(
            f"OOD set {ood_set} has images of shape {outliers.info.shape}, the ID set {ctx.test.info.shape}"
        )
    detectors = {name: detector(name).fit(model, ctx.train) for name in DETECTORS}
    detectors["reconstruction"] = ReconstructionError(train_config=ctx.autoencoder_config(), cache=options.cache).fit(
        None, ctx.train
    )
    metrics, scores = {}, {}
    for name, det in detectors.items():
        result = ood(det, ctx.test.x, outliers.x)
        metrics[name], scores[name] = result.metrics, (result.id_scores, result.ood_scores)
        plots.sorted_scores(*scores[name], ctx.folder.figure(f"sorted_{name}"), title=f"{name}: sorted scores")
        plots.score_histogram(*scores[name], ctx.folder.figure(f"hist_{name}"), title=f"{name}: ID vs OOD")
    plots.roc_pr(scores, ctx.folder.figure("roc"), ctx.folder.figure("pr"))
    clean = accuracy(model, ctx.test.x, ctx.test.y)
    family = ood_set.split(":")[0]
    results = {"ood_set": ood_set, "clean_accuracy": clean, "metrics": metrics, "n_id": len(ctx.test),
               "n_ood": len(outliers)}  # fmt: skip
    n = numbers(results)
    results["findings"] = findings(n, family)
    few = (
        [f"Only {len(outliers)} OOD images: one image moves AUROC by up to {1 / len(outliers):.3f}.", ""]
        if len(outliers) < 200
        else []
    )
    sizes = f"{len(ctx.test)} ID test images vs {len(outliers)} OOD images"
    lines = header(ctx, TITLE, SUMMARY) + [
        f"OOD set: `{ood_set}` ({len(outliers)} images). Clean test accuracy: {clean:.3f}.",
        "",
        *few,
        "## Findings",
        "",
        *[f"- {f}" for f in results["findings"]],
        "",
        f"## Against the write-up (here {sizes})",
        "",
        headline_table(
            headlines(results)[: 1 + sum(1 for k in REFERENCE if k[0] == family)],
            {k: None if v is None else f"{v:.3f}" for k, v in n.items()},
            options.dataset,
        ),
        "",
        f"## Every score ({sizes}; OOD is the positive class; higher score = more likely OOD)",
        "",
        table(
            ["score", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"],
            [[d, *(f"{v:.3f}" for v in m.values())] for d, m in metrics.items()],
        ),
        "",
        look(LOOK),
        "",
        "![roc](roc.png) ![pr](pr.png)",
        "",
        *[f"![{d}](sorted_{d}.png) ![{d}](hist_{d}.png)" for d in metrics],
    ]
    checks = [labelled(model_learned(clean, len(ctx.test.info.classes), len(ctx.test)), f"all {len(ctx.test)} test images")]
    checks += [labelled(ood_auroc(m, len(ctx.test), len(outliers)), f"{name}, {sizes}") for name, m in metrics.items()]
    checks.append(labelled(ood_saturated(*scores["max_softmax"]), f"max_softmax, {sizes}"))
    return finish(ctx, results, lines, checks)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
