"""Recipe 5 — PGD and DDN against feature squeezing and defensive distillation (the third write-up)."""

from pathlib import Path
from typing import Annotated

import numpy as np

from robustkit.app import plots
from robustkit.app.findings import compare_accuracies
from robustkit.app.runner import Headline, RecipeOptions, finish, header, look, over_seeds, start, table
from robustkit.app.sanity import labelled
from robustkit.defenses.distillation import DefensiveDistillation, TemperatureScaled
from robustkit.detectors.squeezing import FeatureSqueezing
from robustkit.evaluate import (
    accuracy,
    attack_batches,
    defense_cost,
    gradients_available,
    model_learned,
    ood_metrics,
    predict,
    unbounded_attack,
)
from robustkit.modelling.squeezers import default_squeezers
from robustkit.registry import attack

NAME = "squeeze-distill"
TITLE = "Feature squeezing and defensive distillation"
SUMMARY = "PGD (L∞, L2) and DDN against a feature-squeezing detector and a defensively distilled model."
ORDER = 5
DEFAULT_DATASET = "cifar10"
LOOK = (  # the report's paragraph beside the figures
    "The curves are the squeezing detector's, scoring the baseline model's successful adversarial examples of "
    "each attack against the clean test images: a curve near the top-left corner means the detector flags "
    "that attack's examples while passing clean images, one near the diagonal that it cannot tell them "
    "apart. Look at the attack it catches worst: an attacker who knows the detector would choose that one."
)
COST = 0.05  # a defense that loses more clean accuracy than this (5 points) is called costly
MASKING = 0.2  # distilled PGD accuracy this far above the baseline's: gradient masking suspected
FLAGGED = 0.1  # a detector flagging more clean inputs than this is not usable at its threshold
ADAPTIVE = "distilled, adaptive"  # the accuracy row of attacks through the distilled logits divided by T


def _three(value: float | None) -> str:
    """A share at three decimals, as the findings give it ('–': none)."""
    return "–" if value is None else f"{value:.3f}"


def numbers(results: dict) -> dict[str, float | None]:
    """Clean accuracy of baseline, teacher and student (on all test images), attacked accuracy
    (``<row>/<attack>``; row `ADAPTIVE`: the distilled model attacked through its logits
    divided by T), the detector's TPR per attack and its clean FPR, chance level and ``attacked`` (images)."""
    out: dict[str, float | None] = {
        "baseline/clean": results["clean"]["baseline"],
        "teacher/clean": results["clean"]["teacher"],
        "student/clean": results["clean"]["distilled"],
        "chance": 1 / results["num_classes"],
        "detector/clean_fpr": results["detector"]["clean_fpr_at_threshold"],
        "attacked": results.get("attacked"),
    }
    for model, row in results["accuracy"].items():
        for attack_name, value in row.items():
            if attack_name != "clean":
                out[f"{model}/{attack_name}"] = value
    for attack_name, d in results["detector"].items():
        if isinstance(d, dict):
            out[f"detector/{attack_name}/tpr"] = d["tpr_at_threshold"]
            out[f"detector/{attack_name}/tpr_at_5fpr"] = d.get("tpr_at_5pct_fpr")
    return out


def findings(n: dict) -> list[str]:
    """The report's findings, computed from `numbers` alone."""
    out = []
    base, teacher, student = n.get("baseline/clean"), n.get("teacher/clean"), n.get("student/clean")
    chance = n.get("chance") or 0.1
    if teacher is not None and teacher < chance + 0.05:
        out.append(
            f"The teacher did not learn (clean accuracy {teacher:.3f}, chance {chance:.2f}): the distilled "
            "rows below describe an untrained network, not distillation."
        )
    elif base is not None and teacher is not None and student is not None:
        worst = min(teacher, student)
        if base - worst <= COST:
            out.append(
                f"Distillation at this temperature keeps clean accuracy: teacher {teacher:.3f} and student "
                f"{student:.3f} against the undefended model's {base:.3f} (within {COST * 100:.0f} points)."
            )
        else:
            out.append(
                f"Distillation costs clean accuracy: teacher {teacher:.3f}, student {student:.3f} against the "
                f"undefended model's {base:.3f} ({(base - worst) * 100:.1f} points lost)."
            )
    b, d = n.get("baseline/pgd_linf"), n.get("distilled/pgd_linf")
    images = n.get("attacked")
    if b is not None and d is not None:
        change = compare_accuracies(b, d, images)
        if d > b + MASKING and change.up:
            out.append(
                f"The distilled model resists PGD L∞ far better than the baseline ({d:.3f} vs {b:.3f}): the known "
                "signature of gradient masking by a saturated softmax at T = 1 (Carlini & Wagner 2016), not of "
                "real robustness; attacks on logits or with rescaled logits undo it."
            )
        elif change.up:
            out.append(
                f"Distillation raises PGD L∞ accuracy from {b:.3f} to {d:.3f} ({(d - b) * 100:+.1f} points). Read it "
                "with the sanity checks above: a distilled model's gain is often masked gradients (a saturated "
                "softmax at T = 1, Carlini & Wagner 2016) rather than robustness."
            )
        elif change.down:
            out.append(f"Distillation lowers PGD L∞ accuracy from {b:.3f} to {d:.3f} ({(d - b) * 100:+.1f} points).")
        else:
            out.append(
                f"Distillation did not change PGD L∞ accuracy beyond sampling noise ({d:.3f} vs the baseline's "
                f"{b:.3f}; {change.noise() or 'images not counted'})."
            )
    adaptive = n.get(f"{ADAPTIVE}/pgd_linf")
    if b is not None and d is not None and adaptive is not None:
        if compare_accuracies(d, adaptive, images).down:
            versus = "above" if compare_accuracies(b, adaptive, images).up else "no better than"
            out.append(
                f"PGD L∞ on the distilled model's logits divided by T leaves {adaptive:.3f} (plain PGD: {d:.3f}): "
                f"the saturated softmax hid the gradient (Carlini & Wagner 2016), and {adaptive:.3f}, {versus} the "
                f"baseline's {b:.3f}, is its PGD L∞ accuracy once the attack has the gradient."
            )
        else:
            out.append(
                f"PGD L∞ on the distilled model's logits divided by T leaves {adaptive:.3f}, no lower than plain PGD "
                f"({d:.3f}): the plain attack was not held back by a saturated softmax."
            )
    tprs = {k.split("/")[1]: v for k, v in n.items() if k.startswith("detector/") and k.endswith("/tpr") and v is not None}
    fpr = n.get("detector/clean_fpr")
    if tprs and fpr is not None:
        listed = ", ".join(f"{a} {v:.3f}" for a, v in tprs.items())
        caught = [a for a, v in tprs.items() if v > 0.5]
        out.append(
            f"At the threshold the squeezing detector flags {fpr:.3f} of clean inputs and, of the successful "
            f"adversarial examples, {listed}; "
            + (f"it catches most {', '.join(caught)} examples." if caught else "it catches fewer than half of any attack's examples.")
        )
        at5 = {a: n.get(f"detector/{a}/tpr_at_5fpr") for a in tprs}
        if fpr > FLAGGED and all(v is not None for v in at5.values()):
            out.append(
                f"A false-positive rate of {fpr:.3f} is too high for use; at 5% false positives (Xu et al. 2018 set "
                f"the threshold on clean data) it catches {', '.join(f'{a} {v:.3f}' for a, v in at5.items())}."
            )
    return out


HEADLINES = [
    Headline("baseline/clean", "undefended clean accuracy"),
    Headline("teacher/clean", "teacher clean accuracy (T)"),
    Headline("student/clean", "distilled student clean accuracy"),
    Headline("baseline/pgd_linf", "undefended PGD L∞ accuracy"),
    Headline("distilled/pgd_linf", "distilled PGD L∞ accuracy"),
    Headline(f"{ADAPTIVE}/pgd_linf", "distilled PGD L∞ accuracy, attack on logits / T"),
    Headline("detector/clean_fpr", "squeezing detector FPR on clean"),
]


def headlines(results: dict | None = None) -> list[Headline]:
    """The headline numbers and the write-up's value for each (``None``: it has none)."""
    return HEADLINES


def run(
    options: RecipeOptions,
    temperature: Annotated[float, "distillation temperature T"] = 20.0,
    threshold: Annotated[float, "feature-squeezing L1 threshold above which an input is flagged"] = 1.0,
    squeezers: Annotated[str | None, "comma-separated squeezers, e.g. bit_depth:5,median_filter:2 (default: by image size)"] = None,
    attack_limit: Annotated[int, "number of test images attacked"] = 200,
) -> Path:
    """Attack a baseline and a distilled model; score clean and adversarial inputs by feature squeezing.

    The write-up used Animals-10, a folder of mixed-size images: ``--dataset 'imagefolder:PATH?size=32'``
    resizes every image (shorter side to 32, centre crop).
    """
    return over_seeds(
        NAME, TITLE, options, lambda o: _once(o, temperature, threshold, squeezers, attack_limit), numbers, findings, headlines,
    )  # fmt: skip


def _once(options: RecipeOptions, temperature: float, threshold: float, squeezers: str | None, attack_limit: int) -> Path:
    ctx = start(NAME, options)
    baseline = ctx.classifier()
    distiller = DefensiveDistillation(
        temperature=temperature, train_config=ctx.config, cache=options.cache, progress=options.progress
    )
    distilled = distiller.apply(baseline, ctx.train)
    clean_all = {
        "baseline": accuracy(baseline, ctx.test.x, ctx.test.y),
        "teacher": accuracy(distiller.teacher, ctx.test.x, ctx.test.y),
        "distilled": accuracy(distilled, ctx.test.x, ctx.test.y),
    }
    x, y = ctx.test.x[:attack_limit], ctx.test.y[:attack_limit]
    eps = ctx.profile.eps
    attacks = {
        "pgd_linf": attack("pgd", eps=eps, steps=20),
        "pgd_l2": attack("pgd_l2", eps=eps * 10, steps=20),
        "ddn": attack("ddn", steps=100),
    }
    names = tuple(squeezers.split(",")) if squeezers else default_squeezers(ctx.test.info.shape)
    detector = FeatureSqueezing(squeezers=names, threshold=threshold).fit(baseline)
    clean_scores = detector.score_batches(x)
    right = predict(baseline, x) == y  # Xu et al. 2018 attack correctly classified images only
    results, roc = {"accuracy": {}, "detector": {}}, {}
    scaled = TemperatureScaled(distilled, temperature).eval()  # the adaptive attack (Carlini & Wagner 2016)
    rows = {"baseline": baseline, "distilled": distilled, ADAPTIVE: scaled}  # row -> the model the attack sees
    for label, model in rows.items():
        results["accuracy"][label] = {"clean": accuracy(model, x, y)}
    for name, atk in attacks.items():
        for label, model in rows.items():
            adv = attack_batches(atk, model, x, y)
            results["accuracy"][label][name] = accuracy(model, adv, y)
            if label == "baseline":
                fooled = right & (predict(model, adv) != y)  # successful: right before the attack, wrong after
                adv_scores = detector.score_batches(adv[fooled]) if fooled.any() else np.zeros(0)
                entry = {
                    "successful_examples": int(fooled.sum()),
                    "tpr_at_threshold": float((adv_scores > threshold).mean()) if len(adv_scores) else None,
                    "median_l2": float((adv - x).flatten(1).norm(dim=1)[fooled].median()) if fooled.any() else None,
                }
                if len(adv_scores):
                    entry.update(ood_metrics(clean_scores, adv_scores))
                    cut = float(np.quantile(clean_scores, 0.95))
                    entry["tpr_at_5pct_fpr"] = float((adv_scores > cut).mean())
                    roc[name] = (clean_scores, adv_scores)
                results["detector"][name] = entry
    fpr = float((clean_scores > threshold).mean())
    results["detector"]["clean_fpr_at_threshold"] = fpr
    results.update({"temperature": temperature, "threshold": threshold, "squeezers": list(names), "eps": eps})
    results.update({"clean": clean_all, "num_classes": ctx.test.info.num_classes, "attacked": len(x)})
    if roc:
        plots.roc_pr(roc, ctx.folder.figure("squeezing_roc"), ctx.folder.figure("squeezing_pr"))
    acc = results["accuracy"]
    det = results["detector"]
    plain, through = acc["distilled"]["pgd_linf"], acc[ADAPTIVE]["pgd_linf"]  # the adaptive row measures masking
    results["gradient_masking_suspected"] = (
        plain > acc["baseline"]["pgd_linf"] + MASKING or compare_accuracies(plain, through, len(x)).down
    )
    results["findings"] = findings(numbers(results))
    config = distiller.student_config
    lines = header(ctx, TITLE, SUMMARY) + [
        f"PGD L∞ ε={eps:.4f}, PGD L2 ε={eps * 10:.3f} (20 steps), DDN (100 steps, unbounded); attacks on the first {len(x)} test images.",
        f"Distillation at T={temperature:g}: teacher and student each trained {config.epochs} epochs with the "
        "undefended model's settings, the head initialised T× larger and trained at the matching learning rate "
        "(so training at T is training at T = 1 with T× larger logits; no extra epochs); "
        f"squeezers {', '.join(names)}; threshold {threshold:g}.",
        "",
        f"## Clean accuracy (all {len(ctx.test)} test images)",
        "",
        table(
            ["", "undefended", "teacher (at T=1)", "student (at T=1)"],
            [[f"clean accuracy ({len(ctx.test)} test images)", *[f"{clean_all[k]:.3f}" for k in clean_all]]],
        ),
        "",
        "## Findings",
        "",
        *[f"- {f}" for f in results["findings"]],
        "",
        f"## Accuracy (the {len(x)} attacked test images)",
        "",
        f"Every column is measured on the first {len(x)} test images, the ones attacked, so its `clean` column is "
        f"their clean accuracy; the clean accuracy above is on all {len(ctx.test)} test images."
        if len(x) < len(ctx.test)
        else f"Every column is measured on all {len(x)} test images.",
        "",
        table(
            ["model", f"clean ({len(x)} images)", *attacks],
            [[k, *(f"{a:.3f}" for a in v.values())] for k, v in acc.items()],
        ),
        "",
        f"`{ADAPTIVE}`: the distilled model, attacked through its logits divided by T={temperature:g} (the same "
        "predictions with an unsaturated softmax; Carlini & Wagner 2016).",
        "",
        "## Feature-squeezing detector (on the baseline model's successful adversarial examples)",
        "",
        f"Of the {len(x)} attacked test images, an example is successful when the baseline classified the clean "
        "image right and the attacked one wrong (Xu et al. 2018); its count is the table's `examples` column, the "
        f"number of images each TPR and AUROC is measured on. False positives are counted on all {len(x)} clean "
        "images.",
        "",
        f"False-positive rate on the {len(x)} clean images at threshold {threshold:g}: {fpr:.3f}.",
        "",
        table(
            ["attack", f"examples (of {len(x)})", "TPR @ threshold", "TPR @ 5% FPR", "AUROC"],
            [
                [n, d["successful_examples"], *(_three(d.get(k)) for k in ("tpr_at_threshold", "tpr_at_5pct_fpr", "AUROC"))]
                for n, d in det.items()
                if isinstance(d, dict)
            ],
        ),
        "",
        *([look(LOOK), "", "![roc](squeezing_roc.png) ![pr](squeezing_pr.png)"] if roc else []),
    ]
    classes = len(ctx.test.info.classes)
    everyone, attacked = f"all {len(ctx.test)} test images", f"the {len(x)} attacked images"
    checks = [
        labelled(model_learned(clean_all["baseline"], classes, len(ctx.test)), everyone),
        labelled(model_learned(clean_all["teacher"], classes, len(ctx.test)), f"distillation teacher, {everyone}"),
        labelled(defense_cost(clean_all["baseline"], clean_all["distilled"]), f"distillation, {everyone}"),
        labelled(gradients_available(distilled, x, y), f"distilled model, {attacked}"),
        labelled(unbounded_attack(attacks["pgd_l2"], distilled, x, y), f"PGD L2 on the distilled model, {attacked}"),
        labelled(
            unbounded_attack(attacks["pgd_l2"], scaled, x, y), f"PGD L2 on the distilled model's logits / T, {attacked}"
        ),
    ]
    return finish(ctx, results, lines, checks)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
