"""Recipe 2 — the smallest FGSM budget k/255 that fools the model, per image (the first write-up)."""

from pathlib import Path
from typing import Annotated

import torch

from robustkit.app import plots
from robustkit.app.runner import Headline, RecipeOptions, comparison, finish, header, look, over_seeds, start, table
from robustkit.app.sanity import labelled
from robustkit.evaluate import minimal_budget, model_learned, predict, random_targets

NAME = "fgsm-budget"
TITLE = "Minimal FGSM budget"
SUMMARY = "Per image, the smallest untargeted and targeted FGSM budget k/255 that changes the prediction."
ORDER = 2
DEFAULT_DATASET = "cifar10"
LOOK = (  # the report's paragraph beside the figures
    "Each grid shows the searched images (top row, captioned with the true class) and the same images at "
    "the smallest FGSM budget that moved the prediction (bottom row, captioned with the new prediction and "
    "the budget k/255, or failed when no budget up to the largest tried did). Look at whether that "
    "perturbation is visible at all, and at which classes the images move to."
)


def _class_index(value: str, classes: tuple) -> int:
    if value in classes:
        return classes.index(value)
    if value.isdigit() and int(value) < len(classes):
        return int(value)
    raise ValueError(f"unknown class {value!r}; valid: {', '.join(classes)} (or an index)")


def _median(values: list) -> float | None:
    return float(torch.tensor(values, dtype=torch.float).median()) if values else None


def numbers(results: dict) -> dict[str, float | None]:
    """Median budget k (of the successful images), success rate and the number of images
    searched (``<mode>/images``) and fooled within the cap (``<mode>/found``), untargeted and targeted."""
    out: dict[str, float | None] = {}
    for mode in ("untargeted", "targeted"):
        found = [r["k"] for r in results[mode]["images"] if r["k"]]
        out[f"{mode}/median_k"] = _median(found)
        out[f"{mode}/success_rate"] = results[mode]["success_rate"]
        out[f"{mode}/images"], out[f"{mode}/found"] = len(results[mode]["images"]), len(found)
    return out


def findings(n: dict) -> list[str]:
    """The report's findings, computed from `numbers` alone."""
    ks, kt = n.get("untargeted/median_k"), n.get("targeted/median_k")
    out = []
    ft, fs = n.get("targeted/found"), n.get("untargeted/found")
    over = f" over the {ft:g} and {fs:g} images fooled" if ft is not None and fs is not None else ""
    if ks is not None and kt is not None:
        if kt > ks:
            out.append(f"Targeted success needs a larger budget than untargeted here too (median {kt:g} vs {ks:g} /255{over}), as in the write-up.")
        elif kt == ks:
            out.append(f"Targeted and untargeted success need the same median budget here ({kt:g} /255{over}), unlike the write-up, where targeted needed more.")
        else:
            out.append(f"Targeted budgets were smaller than untargeted ones on these images (median {kt:g} vs {ks:g} /255{over}), unlike the write-up.")
    for mode in ("untargeted", "targeted"):
        rate, searched = n.get(f"{mode}/success_rate"), n.get(f"{mode}/images")
        if rate is not None and rate < 1:
            of = f"the {searched:g} images searched" if searched else "the images"
            out.append(f"{mode.capitalize()} FGSM failed within the budget cap on {1 - rate:.0%} of {of}.")
    return out


HEADLINES = [
    Headline("untargeted/median_k", "median untargeted budget (k/255)", 2),
    Headline("targeted/median_k", "median targeted budget (k/255)", None, "8–21"),
    Headline("untargeted/success_rate", "untargeted success rate"),
    Headline("targeted/success_rate", "targeted success rate"),
]


def headlines(results: dict | None = None) -> list[Headline]:
    """The headline numbers and the write-up's value for each (``None``: it has none)."""
    return HEADLINES


def run(
    options: RecipeOptions,
    images: Annotated[int, "number of correctly classified test images searched (the first ones)"] = 5,
    index: Annotated[str | None, "comma-separated test indices to search instead, e.g. 3,7"] = None,
    target: Annotated[str | None, "target class name or index (default: a random other class per image)"] = None,
    max_k: Annotated[int, "largest budget tried, in units of 1/255"] = 64,
) -> Path:
    """Search k = 1, 2, ... max_k for correctly classified test images (``--index 3,7`` or the first ``--images``)."""
    return over_seeds(
        NAME, TITLE, options, lambda o: _once(o, images, index, target, max_k), numbers, findings, headlines,
    )


def _once(options: RecipeOptions, images: int, index: str | None, target: str | None, max_k: int) -> Path:
    ctx = start(NAME, options)
    classes = ctx.test.info.classes
    t_index = None if target is None else _class_index(target, classes)  # a bad --target fails before training
    model = ctx.classifier()
    correct = (predict(model, ctx.test.x) == ctx.test.y).nonzero().flatten()
    if index:
        picked = torch.tensor([int(i) for i in index.split(",")])
        wrong = [int(i) for i in picked if i not in set(correct.tolist())]
        if wrong:
            raise ValueError(f"test images {wrong} are misclassified already; pick correctly classified ones")
    else:
        picked = correct[:images]
    x, y = ctx.test.x[picked], ctx.test.y[picked]
    if target is None:
        t = random_targets(y, len(classes), seed=options.seed)
    else:
        t = torch.full_like(y, t_index)
        if (t == y).any():
            raise ValueError(f"target class {target!r} is the true class of some picked images; choose another")
    results, lines = {}, header(ctx, TITLE, SUMMARY) + [look(LOOK), ""]
    searched = f"the {len(x)} correctly classified test images searched"
    for mode, tgt in (("untargeted", None), ("targeted", t)):
        budget = minimal_budget(model, x, y, target=tgt, max_k=max_k)
        adv_pred = predict(model, budget.x_adv)
        per_image = []
        for i in range(len(x)):
            k = int(budget.k[i])
            steps = budget.trajectory[i, : (k if k > 0 else max_k)].tolist()
            per_image.append(
                {
                    "index": int(picked[i]),
                    "true": classes[int(y[i])],
                    "target": None if tgt is None else classes[int(tgt[i])],
                    "k": k if k > 0 else None,
                    "eps": k / 255 if k > 0 else None,
                    "success": bool(budget.success[i]),
                    "prediction": classes[int(adv_pred[i])],
                    "trajectory": [classes[p] for p in steps],
                }
            )
        results[mode] = {
            "images": per_image,
            "success_rate": float(budget.success.float().mean()),
            "passes": budget.passes,
        }
        captions_clean = [f"{r['true']}" for r in per_image]
        captions_adv = [
            f"{r['prediction']} @ {r['k']}/255" if r["success"] else f"failed ≤{max_k}/255" for r in per_image
        ]
        plots.image_grid(
            [("original", x.numpy(), captions_clean), ("adversarial", budget.x_adv.numpy(), captions_adv)],
            ctx.folder.figure(f"{mode}_examples"),
            title=f"{mode} FGSM, smallest budget per image",
        )
        headers = ["test index", "true", *(["target"] if tgt is not None else []), "budget k/255", "now predicted"]
        rows = [
            [r["index"], r["true"], *([r["target"]] if tgt is not None else []), r["k"], r["prediction"]]
            for r in per_image
        ]
        lines += [f"## {mode.capitalize()} ({searched})", "", table(headers, rows), "", f"![{mode}]({mode}_examples.png)", ""]
    n = numbers(results)
    results["findings"] = findings(n)
    lines += [
        "## Findings",
        "",
        *[f"- {f}" for f in results["findings"]],
        "",
        f"## Against the write-up (here {searched}; a median over the images whose budget was found)",
        "",
        comparison(
            [
                ("median untargeted budget (k/255)", n["untargeted/median_k"], 2),
                ("median targeted budget (k/255)", n["targeted/median_k"], "8–21 (bird→deer 8, cat→automobile 10, truck→deer 21)"),
            ],
            options.dataset,
        ),
    ]
    clean = len(correct) / len(ctx.test)
    learned = labelled(model_learned(clean, len(classes), len(ctx.test)), f"all {len(ctx.test)} test images")
    return finish(ctx, results, lines, [learned])


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
