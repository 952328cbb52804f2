"""Recipe 6 — an autoencoder that cleans adversarial inputs, oblivious and adaptive (Meng & Chen 2017, MagNet)."""

from pathlib import Path
from typing import Annotated

import torch

from robustkit.app import plots
from robustkit.app.findings import compare_accuracies
from robustkit.app.runner import Headline, RecipeOptions, finish, header, look, over_seeds, start, table
from robustkit.app.sanity import adaptive_row, labelled
from robustkit.evaluate import (
    Check,
    accuracy,
    adaptive_vs_oblivious,
    attack_batches,
    defense_cost,
    model_learned,
    predict,
    robust_accuracy,
)
from robustkit.registry import attack, defense

NAME = "ae-purification"
TITLE = "Autoencoder purification"
SUMMARY = "Classify an autoencoder's reconstruction: FGSM and PGD accuracy without and with it, oblivious and adaptive."
ORDER = 6
DEFAULT_DATASET = "mnist"
KEEP = 0.9  # purification that keeps at least this share of clean accuracy is "cheap"
SMALL_GAIN = 0.1  # an oblivious PGD gain below this (10 points) is called small
ROWS = ("no defense", "AE, oblivious", "AE, adaptive (BPDA)", "AE, adaptive (through the AE)")
GRID_IMAGES = 8  # rows of the purification figure
ADAPTIVE = {  # what each adaptive row already does, for the advice of its adaptive_vs_oblivious check
    "BPDA": "already attacks with BPDA (the autoencoder taken as the identity in the backward pass), and that "
    "straight-through gradient misleads the attack here",
    "through the AE": "already differentiates through the autoencoder (it is differentiable: BPDA is not needed), "
    "and the gradient through it misleads the attack here (vanishing or noisy through the reconstruction)",
}


def adaptive_advice(check: Check, row: str) -> Check:
    """``adaptive_vs_oblivious`` for an adaptive row (a key of `ADAPTIVE`), whose attack already goes through the AE."""
    return adaptive_row(
        check,
        f"PGD {row}",
        "PGD made on the bare classifier",
        f"this row {ADAPTIVE[row]}",
        "more steps, random restarts, the other adaptive row's gradient",
    )


def numbers(results: dict) -> dict[str, float | None]:
    """``<row>/<clean|fgsm|pgd>`` for every row, ``clean_kept`` (purified ÷ undefended clean) and ``images``."""
    out: dict[str, float | None] = {}
    for row, values in results["accuracy"].items():
        for k, v in values.items():
            out[f"{row}/{k}"] = v
    base = out.get("no defense/clean")
    out["clean_kept"] = out["AE, oblivious/clean"] / base if base else None
    out["images"] = results.get("images_measured")
    return out


def findings(n: dict) -> list[str]:
    """The report's findings, computed from `numbers` alone."""
    out = []
    kept, base, ae = n.get("clean_kept"), n.get("no defense/clean"), n.get("AE, oblivious/clean")
    if kept is not None:
        out.append(
            f"Purification keeps {kept:.1%} of the clean accuracy ({ae:.3f} of {base:.3f}): "
            + ("a small cost." if kept >= KEEP else f"a large cost (below {KEEP:.0%}); the defense trades away accuracy.")
        )
    none, obl = n.get("no defense/pgd"), n.get("AE, oblivious/pgd")
    adaptive = [v for k, v in n.items() if k.startswith("AE, adaptive") and k.endswith("/pgd") and v is not None]
    images = n.get("images")
    if none is not None and obl is not None:
        gain = compare_accuracies(none, obl, images)
        if not gain.up:
            verdict = (
                f": no gain beyond sampling noise ({gain.noise() or 'images not counted'}); this purifier leaves the "
                "adversarial pattern in place (a denoiser trained on stronger noise, --noise, removes more of it and "
                "costs more clean accuracy)."
            )
        elif gain.delta < SMALL_GAIN:
            verdict = (
                ": a small gain; this purifier leaves most of the adversarial pattern in place (a denoiser trained "
                "on stronger noise, --noise, removes more of it and costs more clean accuracy)."
            )
        else:
            verdict = "."
        out.append(
            f"Against an oblivious attacker (PGD made on the bare classifier) purification moves PGD accuracy "
            f"from {none:.3f} to {obl:.3f} ({gain.delta:+.3f}){verdict}"
        )
        if adaptive:
            worst = min(adaptive)
            which = "BPDA" if worst == n.get("AE, adaptive (BPDA)/pgd") else "through the AE"
            back = compare_accuracies(obl, worst, images)
            if back.down:
                out.append(
                    f"An adaptive attacker takes {obl - worst:.3f} of it back (PGD {which}: {worst:.3f}, beyond "
                    f"sampling noise, {back.noise()}), so the oblivious number overstates robustness; the adaptive one "
                    "is the defense's worth."
                )
            else:
                out.append(
                    f"The adaptive attacks do no better than the oblivious one (worst: {which}, {worst:.3f}, "
                    f"{back.within() if back.n else 'images not counted'}); check them with more steps before trusting that."
                )
    return out


HEADLINES = [
    Headline("no defense/clean", "undefended clean accuracy"),
    Headline("AE, oblivious/clean", "purified clean accuracy"),
    Headline("clean_kept", "share of clean accuracy kept"),
    Headline("no defense/pgd", "undefended PGD accuracy"),
    Headline("AE, oblivious/pgd", "purified PGD accuracy, oblivious"),
    Headline("AE, adaptive (BPDA)/pgd", "purified PGD accuracy, adaptive (BPDA)"),
    Headline("AE, adaptive (through the AE)/pgd", "purified PGD accuracy, adaptive (through the AE)"),
]


def headlines(results: dict | None = None) -> list[Headline]:
    """The headline numbers and the write-up's value for each (``None``: it has none)."""
    return HEADLINES


def run(
    options: RecipeOptions,
    eps: Annotated[str, "L∞ budget of FGSM and PGD (default: the data set's usual one)"] = "",
    arch: Annotated[str, "purifier: denoiser (residual denoising autoencoder) or autoencoder (bottleneck)"] = "denoiser",
    noise: Annotated[float | None, "std of the Gaussian noise the denoiser learns to remove (default: 0.1; 0.05 for natural images)"] = None,
    ae_epochs: Annotated[int | None, "autoencoder training epochs (default: the classifier's)"] = None,
) -> Path:
    """Train a classifier and an autoencoder on clean data; attack with FGSM and PGD at ``--eps``."""
    return over_seeds(NAME, TITLE, options, lambda o: _once(o, eps, arch, noise, ae_epochs), numbers, findings, headlines)


def _once(options: RecipeOptions, eps: str, arch: str, noise: float | None, ae_epochs: int | None) -> Path:
    ctx = start(NAME, options)
    noise = ctx.profile.purifier_noise if noise is None else noise
    model = ctx.classifier()
    config = ctx.autoencoder_config(ae_epochs)
    purifier = defense("ae_purification", arch=arch, noise=noise, train_config=config, cache=options.cache,
                       progress=options.progress)  # fmt: skip
    purified = purifier.apply(model, ctx.train)
    bpda = defense("ae_purification", autoencoder=purifier.autoencoder, straight_through=True).apply(model)
    budget = eps or f"{ctx.profile.eps}"
    attacks = {"fgsm": attack("fgsm", eps=budget), "pgd": attack("pgd", eps=budget, steps=20)}
    x, y = ctx.test.x, ctx.test.y
    clean_purified = accuracy(purified, x, y)
    table_rows = {"no defense": {"clean": accuracy(model, x, y)}}
    table_rows.update({row: {"clean": clean_purified} for row in ROWS[1:]})
    adversarial = {}
    for name, atk in attacks.items():
        adv = adversarial[name] = attack_batches(atk, model, x, y)  # made on the bare classifier
        table_rows["no defense"][name] = accuracy(model, adv, y)
        table_rows["AE, oblivious"][name] = accuracy(purified, adv, y)
        table_rows["AE, adaptive (BPDA)"][name] = robust_accuracy(atk, bpda, x, y)["accuracy"]
        table_rows["AE, adaptive (through the AE)"][name] = robust_accuracy(atk, purified, x, y)["accuracy"]
    grid = purification_grid(ctx, model, purified, adversarial["pgd"])
    results = {"eps": attacks["fgsm"].eps, "arch": arch, "noise": noise if arch == "denoiser" else 0.0,
               "ae_epochs": config.epochs, "accuracy": table_rows, "grid": grid, "images_measured": len(x)}  # fmt: skip
    results["findings"] = findings(numbers(results))
    what = (
        f"a residual denoising autoencoder trained {config.epochs} epochs to remove Gaussian noise of std {noise:g}"
        if arch == "denoiser"
        else f"a bottleneck autoencoder trained {config.epochs} epochs to reconstruct clean images"
    )
    lines = header(ctx, TITLE, SUMMARY) + [
        f"Purifier: {what}. Budget ε={attacks['fgsm'].eps:.4f} (L∞); PGD with 20 steps. *Oblivious*: adversarial "
        "examples made on the bare classifier, then purified (as the write-up did). *Adaptive (BPDA)*: the attack "
        "treats the autoencoder as the identity in the backward pass (Athalye et al. 2018). *Adaptive (through "
        "the AE)*: the attack differentiates through the autoencoder.",
        "",
        "## Findings",
        "",
        *[f"- {f}" for f in results["findings"]],
        "",
        f"## Accuracy (all {len(y)} test images)",
        "",
        table(["setting", "clean", "FGSM", "PGD"], [[k, *(f"{a:.3f}" for a in v.values())] for k, v in table_rows.items()]),
        "",
        "## Clean, adversarial and purified images",
        "",
        look(look_at(grid)),
        "",
        "![clean, adversarial and purified images](purification.png)",
    ]
    oblivious = table_rows["AE, oblivious"]["pgd"]
    images = f"all {len(y)} test images"
    checks = [
        labelled(model_learned(table_rows["no defense"]["clean"], len(ctx.test.info.classes), len(y)), images),
        labelled(defense_cost(table_rows["no defense"]["clean"], clean_purified), images),
    ]
    for row in ADAPTIVE:
        check = adaptive_vs_oblivious(table_rows[f"AE, adaptive ({row})"]["pgd"], oblivious, len(y))
        checks.append(labelled(adaptive_advice(check, row), f"PGD, {row}, {images}"))
    return finish(ctx, results, lines, checks)


def purification_grid(ctx, model: torch.nn.Module, purified: torch.nn.Module, adv: torch.Tensor) -> dict:
    """Draw ``purification.png`` (clean / oblivious PGD / purified PGD / purified clean images, each
    titled with its prediction) and count what it illustrates over the whole test set.

    The rows are the first images, in test order, that PGD turns from right to wrong: half of them
    ones the purifier gives their label back, half ones it does not (others fill in when either
    kind is short).
    """
    x, y = ctx.test.x, ctx.test.y
    device = next(purified.purifier.parameters()).device
    with torch.no_grad():
        cleaned = torch.cat([purified.purify(b.to(device)).cpu() for b in x.split(256)])
        cleaned_adv = torch.cat([purified.purify(b.to(device)).cpu() for b in adv.split(256)])
    preds = {"clean": predict(model, x), "adv": predict(model, adv),
             "purified adv": predict(model, cleaned_adv), "purified clean": predict(model, cleaned)}  # fmt: skip
    right = {k: p == y.cpu() for k, p in preds.items()}
    fooled = right["clean"] & ~right["adv"]
    restored, kept = fooled & right["purified adv"], fooled & ~right["purified adv"]
    half = GRID_IMAGES // 2
    first = lambda mask, k: mask.nonzero().flatten()[:k].tolist()  # noqa: E731
    chosen = first(restored, max(half, GRID_IMAGES - int(kept.sum())))
    chosen += first(kept, GRID_IMAGES - len(chosen))
    chosen += [i for i in range(len(y)) if i not in chosen][: GRID_IMAGES - len(chosen)]
    rows = sorted(chosen, key=lambda i: (not bool(restored[i]), not bool(kept[i]), i))
    classes = ctx.test.info.classes
    plots.prediction_grid(
        [
            ("clean", x[rows].numpy(), preds["clean"][rows].tolist()),
            ("PGD (oblivious)", adv[rows].numpy(), preds["adv"][rows].tolist()),
            ("purified PGD", cleaned_adv[rows].numpy(), preds["purified adv"][rows].tolist()),
            ("purified clean", cleaned[rows].numpy(), preds["purified clean"][rows].tolist()),
        ],
        y[rows].tolist(),
        ctx.folder.figure("purification"),
        classes=classes,
        row_labels=[f"test #{i}\ntrue: {classes[int(y[i])]}" for i in rows],
        title="Predictions of the classifier (✓ right, ✗ wrong)",
    )
    return {
        "images": rows,
        "fooled": int(fooled.sum()),
        "restored": int(restored.sum()),
        "shown_restored": sum(bool(restored[i]) for i in rows),
        "shown_not_restored": sum(bool(kept[i]) for i in rows),
        "clean_right": int(right["clean"].sum()),
        "clean_broken": int((right["clean"] & ~right["purified clean"]).sum()),
    }


def look_at(grid: dict) -> str:
    """What to look at in ``purification.png``, with the counts from `purification_grid`."""
    fooled, restored = grid["fooled"], grid["restored"]
    if fooled:
        counts = (
            f"PGD made on the bare classifier turns {fooled} test images from right to wrong; classifying the "
            f"purified versions gives {restored} of them ({restored / fooled:.0%}) their label back. "
        )
    else:
        counts = "PGD made on the bare classifier turned no correctly classified test image wrong. "
    counts += (
        f"Purifying costs {grid['clean_broken']} of the {grid['clean_right']} clean images the classifier "
        "got right (the last column). "
    )
    others = len(grid["images"]) - grid["shown_restored"] - grid["shown_not_restored"]
    shown = (
        f"The grid shows {grid['shown_restored']} images the purifier restores and "
        f"{grid['shown_not_restored']} it does not, the first of each kind in test order"
        + (f", then {others} that PGD did not turn wrong. " if others else ". ")
    )
    return (
        counts
        + shown
        + "Look at whether the purified images resemble the clean ones with the adversarial pattern removed, "
        "and at which red ✗ in the PGD column turn into a green ✓ after purification. The grid shows the "
        "oblivious attack only: the adaptive rows of the table above are what the defense is worth."
    )


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
