"""Recipe 1 — OOD detection with classifier confidence and reconstruction error (the first two write-ups)."""

from pathlib import Path
from typing import Annotated

from robustkit.app import plots
from robustkit.app.runner import RecipeOptions, comparison, finish, header, start, table
from robustkit.detectors.reconstruction import ReconstructionError
from robustkit.evaluate import accuracy, ood
from robustkit.registry import detector

NAME = "ood-baselines"
SUMMARY = "Max logit, max softmax, other pytorch-ood scores and autoencoder MSE: ID test vs OOD images."
ORDER = 1
DEFAULT_DATASET = "cifar10"
DETECTORS = ("max_logit", "max_softmax", "energy", "entropy", "odin", "mahalanobis", "vim", "knn")
REFERENCE = {  # (ood set, detector, metric) -> write-up value
    ("fakedata", "max_logit", "AUROC"): 0.91,
    ("fakedata", "reconstruction", "AUROC"): 0.94,
    ("cifar100", "max_logit", "AUROC"): 0.63,
    ("cifar100", "max_logit", "AUPR-IN"): 0.89,
}


def run(
    options: RecipeOptions,
    ood_set: Annotated[str, "OOD data set: fakedata, cifar100, cifar100:CLASS,CLASS, mnist, imagefolder:PATH"] = "fakedata",
) -> Path:
    """Train a classifier and an autoencoder on ID data, then score ID test vs OOD images."""
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
    rows = [
        (f"{det} {metric} vs {family}", metrics[det][metric], ref)
        for (o, det, metric), ref in REFERENCE.items()
        if o == family
    ]
    best = max(metrics, key=lambda d: metrics[d]["AUROC"])
    lines = header(ctx, "OOD baselines", SUMMARY) + [
        f"OOD set: `{ood_set}` ({len(outliers)} images). Clean test accuracy: {clean:.3f}.",
        "",
        "## Against the write-up",
        "",
        comparison([("clean accuracy", clean, 0.60 if family == "cifar100" else None), *rows], options.dataset),
        "",
        "## Every score (OOD is the positive class; higher score = more likely OOD)",
        "",
        table(["score", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"], [[d, *m.values()] for d, m in metrics.items()]),
        "",
        f"Finding: the best separation here comes from **{best}** (AUROC {metrics[best]['AUROC']:.3f}); "
        f"max logit reaches {metrics['max_logit']['AUROC']:.3f} and the autoencoder MSE "
        f"{metrics['reconstruction']['AUROC']:.3f}.",
        "",
        "![roc](roc.png) ![pr](pr.png)",
        "",
        *[f"![{d}](sorted_{d}.png) ![{d}](hist_{d}.png)" for d in metrics],
    ]
    return finish(ctx, {"ood_set": ood_set, "clean_accuracy": clean, "metrics": metrics}, lines)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
