"""Recipe 3 — accuracy as the FGSM budget grows, untargeted and targeted (the second write-up)."""

from pathlib import Path
from typing import Annotated

import torch

from robustkit.app import plots
from robustkit.app.runner import RecipeOptions, comparison, finish, header, start, table
from robustkit.evaluate import eps_sweep, predict
from robustkit.registry import attack

NAME = "fgsm-sweep"
SUMMARY = "FGSM accuracy-vs-ε curves (untargeted, and targeted at one class) with example grids."
ORDER = 3
DEFAULT_DATASET = "cifar10"
GRID = "0,0.005,0.01,0.02,0.05,0.1,0.2,0.3"


def run(
    options: RecipeOptions,
    eps: Annotated[str, "comma-separated FGSM budgets ε (pixel units)"] = GRID,
    target: Annotated[str | None, "class of the targeted sweep (default: horse, or the last class)"] = None,
) -> Path:
    """Sweep FGSM over ``--eps``; ``--target`` names the targeted class (default: horse, or the last class)."""
    ctx = start(NAME, options)
    model = ctx.classifier()
    classes = ctx.test.info.classes
    target = target or ("horse" if "horse" in classes else classes[-1])
    if target not in classes:
        raise ValueError(f"unknown target class {target!r}; valid: {', '.join(classes)}")
    t_index = classes.index(target)
    fgsm = attack("fgsm")
    untargeted = eps_sweep(fgsm, model, ctx.test.x, ctx.test.y, eps.split(","))
    keep = ctx.test.y != t_index  # a targeted attack needs images of another class
    xt, yt = ctx.test.x[keep], ctx.test.y[keep]
    targeted = eps_sweep(fgsm, model, xt, yt, eps.split(","), target=torch.full_like(yt, t_index))
    plots.eps_curves(
        {
            "untargeted: accuracy": (untargeted.eps, untargeted.accuracy),
            f"targeted → {target}: accuracy": (targeted.eps, targeted.accuracy),
            f"targeted → {target}: success": (targeted.eps, targeted.target_rate),
        },
        ctx.folder.figure("eps_curve"),
        title="FGSM",
    )
    x, y = ctx.test.x[:8], ctx.test.y[:8]
    direction = fgsm.direction(model, x, y)
    for e in (0.01, 0.1, 0.3):
        adv = (x + e * direction).clamp(0, 1)
        rows = [
            ("clean", x.numpy(), [classes[int(p)] for p in predict(model, x)]),
            (f"ε={e}", adv.numpy(), [classes[int(p)] for p in predict(model, adv)]),
        ]
        plots.image_grid(rows, ctx.folder.figure(f"grid_eps_{e}"), title=f"FGSM ε={e}: predictions")
    at = dict(zip(untargeted.eps, untargeted.accuracy, strict=True))
    lines = header(ctx, "FGSM sweep", SUMMARY) + [
        "## Against the write-up (a 60%-accuracy CIFAR-10 model)",
        "",
        comparison(
            [
                ("clean accuracy", at.get(0.0), 0.60),
                ("accuracy at ε=0.01", at.get(0.01), 0.30),
                ("accuracy at ε=0.02", at.get(0.02), 0.20),
            ],
            options.dataset,
        ),
        "",
        "## Sweep",
        "",
        table(
            ["ε", "untargeted accuracy", f"targeted accuracy (→{target})", "target reached"],
            [
                list(r)
                for r in zip(untargeted.eps, untargeted.accuracy, targeted.accuracy, targeted.target_rate, strict=True)
            ],
        ),
        "",
        f"One gradient per batch served all {len(untargeted.eps)} budgets: {untargeted.passes['forward']} forward "
        f"and {untargeted.passes['backward']} backward passes in all (untargeted).",
        "",
        "![eps](eps_curve.png)",
        "",
        "![0.01](grid_eps_0.01.png) ![0.1](grid_eps_0.1.png) ![0.3](grid_eps_0.3.png)",
    ]
    results = {
        "target": target,
        "untargeted": untargeted.as_dict(),
        "targeted": targeted.as_dict(),
        "clean_accuracy": at.get(0.0),
    }
    return finish(ctx, results, lines)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
