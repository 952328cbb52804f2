"""Recipe 4 — does FGSM adversarial training cost OOD detection? (the first two write-ups)"""

from pathlib import Path
from typing import Annotated

from robustkit.app import plots
from robustkit.app.runner import RecipeOptions, comparison, finish, header, start, table
from robustkit.evaluate import accuracy, eps_sweep, ood
from robustkit.registry import attack, defense, detector

NAME = "adversarial-training-ood"
SUMMARY = "Standard vs FGSM-adversarially-trained model: accuracy under FGSM and max-softmax/max-logit OOD detection."
ORDER = 4
DEFAULT_DATASET = "cifar10"
GRID = "0,0.01,0.02,0.05,0.1,0.2"


def run(
    options: RecipeOptions,
    train_eps: Annotated[str | None, "FGSM budget of adversarial training (default: 0.1 for small images, else 2/255)"] = None,
    targeted: Annotated[bool, "adversarial training attacks a random other class"] = False,
    ood_set: Annotated[str, "OOD data set: fakedata, cifar100, cifar100:CLASS,CLASS, ..."] = "fakedata",
    eps: Annotated[str, "comma-separated FGSM budgets of the evaluation sweep"] = GRID,
) -> Path:
    """Train with FGSM examples of the current model every batch (``--train-eps``: 2/255 in the first write-up, 0.1 in the second)."""
    ctx = start(NAME, options)
    standard = ctx.classifier()
    train_eps = train_eps or ("0.1" if ctx.profile.eps >= 0.1 else "2/255")
    trainer = defense(
        "adversarial_training",
        attack=attack("fgsm", eps=train_eps),
        targeted=targeted,
        train_config=ctx.config,
        monitor=ctx.test.take(256),
        cache=options.cache,
        progress=options.progress,
    )
    robust = trainer.apply(standard, ctx.train)
    kwargs = (
        {"shape": ctx.test.info.shape, "size": len(ctx.test), "seed": options.seed} if ood_set == "fakedata" else {}
    )
    outliers = ctx.load(ood_set, split="test", **kwargs)
    models = {"standard": standard, "robust": robust}
    sweeps, metrics = {}, {}
    for label, model in models.items():
        sweeps[label] = eps_sweep(attack("fgsm"), model, ctx.test.x, ctx.test.y, eps.split(",")).as_dict()
        for score in ("max_softmax", "max_logit"):
            result = ood(detector(score).fit(model), ctx.test.x, outliers.x)
            metrics[f"{label}/{score}"] = result.metrics
            plots.score_histogram(
                result.id_scores,
                result.ood_scores,
                ctx.folder.figure(f"hist_{label}_{score}"),
                title=f"{label}: {score}",
            )
            plots.roc_pr(
                {score: (result.id_scores, result.ood_scores)},
                ctx.folder.figure(f"roc_{label}_{score}"),
                ctx.folder.figure(f"pr_{label}_{score}"),
            )
    plots.eps_curves(
        {k: (v["eps"], v["accuracy"]) for k, v in sweeps.items()},
        ctx.folder.figure("eps_curves"),
        title="FGSM accuracy",
    )
    clean = {k: accuracy(m, ctx.test.x, ctx.test.y) for k, m in models.items()}
    delta = metrics["robust/max_softmax"]["AUROC"] - metrics["standard/max_softmax"]["AUROC"]
    if metrics["robust/max_softmax"]["AUROC"] < 0.5:
        finding = "adversarial training made OOD detection collapse: the robust model is *more* confident on OOD inputs (as the first write-up saw)"
    elif delta < -0.02:
        finding = f"adversarial training hurt OOD detection (max-softmax AUROC {delta:+.3f})"
    elif delta > 0.02:
        finding = f"adversarial training helped OOD detection (max-softmax AUROC {delta:+.3f}), as the second write-up saw"
    else:
        finding = f"adversarial training left OOD detection about unchanged (max-softmax AUROC {delta:+.3f})"
    co = trainer.catastrophic_overfitting
    lines = header(ctx, "Adversarial training and OOD detection", SUMMARY) + [
        f"Robust model: FGSM ε={train_eps}{' targeted' if targeted else ''}, half of every batch adversarial. OOD set `{ood_set}`.",
        "",
        f"**Finding:** {finding}.",
        "",
        f"Catastrophic overfitting (monitored PGD accuracy collapsing during training): {'**yes**' if co else 'no'}.",
        "",
        "## Against the write-ups",
        "",
        comparison(
            [
                (
                    "standard max-logit AUROC",
                    metrics["standard/max_logit"]["AUROC"],
                    "0.63 (CIFAR-100 subset)",
                ),
                ("robust max-logit AUROC", metrics["robust/max_logit"]["AUROC"], "0.65 (CIFAR-100 subset)"),
                ("standard max-logit AUPR-IN", metrics["standard/max_logit"]["AUPR-IN"], "0.89 (CIFAR-100 subset)"),
                ("robust max-logit AUPR-IN", metrics["robust/max_logit"]["AUPR-IN"], "0.90 (CIFAR-100 subset)"),
            ],
            options.dataset,
        ),
        "",
        "## Numbers",
        "",
        table(
            ["model", "clean accuracy", *[f"FGSM ε={e:g}" for e in sweeps["standard"]["eps"][1:]]],
            [[k, clean[k], *v["accuracy"][1:]] for k, v in sweeps.items()],
        ),
        "",
        table(
            ["model / score", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"],
            [[k, *m.values()] for k, m in metrics.items()],
        ),
        "",
        "![eps](eps_curves.png)",
        "",
        *[f"![{f}]({f})" for f in ctx.folder.figures if f.startswith(("hist", "roc"))],
    ]
    results = {
        "train_eps": train_eps,
        "targeted": targeted,
        "ood_set": ood_set,
        "clean_accuracy": clean,
        "sweeps": sweeps,
        "ood": metrics,
        "training_history": trainer.history,
        "catastrophic_overfitting": co,
        "finding": finding,
    }
    return finish(ctx, results, lines)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
