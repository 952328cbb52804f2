"""Recipe 8 — which common corruptions does adversarial training help with, and which does it hurt?"""

import math
import statistics
from pathlib import Path
from typing import Annotated

from robustkit.app import plots
from robustkit.app.runner import Headline, RecipeOptions, finish, header, look, over_seeds, start, table
from robustkit.app.sanity import labelled
from robustkit.core.checks import parse_eps
from robustkit.core.papers import HENDRYCKS_2019, YIN_2019
from robustkit.evaluate import defense_cost, model_learned
from robustkit.evaluate.corruptions import corruption_accuracy
from robustkit.modelling.corruptions import CORRUPTIONS, official_folder

NAME = "corruption-robustness"
TITLE = "Common corruptions and adversarial training"
SUMMARY = (
    "Undefended vs adversarially trained model under the 15 common corruptions × 5 severities: accuracy per "
    "corruption, which ones adversarial training helps and hurts, mCE and relative mCE."
)
ORDER = 8
DEFAULT_DATASET = "cifar10"
LOOK = (
    "Each heatmap row is a corruption, each column a severity (1 mild to 5 strong); the colour is accuracy on a "
    "fixed 0–1 scale. Compare the two heatmaps row by row: a row that is brighter for the adversarially trained "
    "model is a corruption it helps with. The table above gives the same per corruption as robust − standard, with "
    "its noise margin."
)
HIGH_FREQUENCY = ("gaussian_noise", "shot_noise", "impulse_noise")
LOW_FREQUENCY = ("fog", "contrast")
DIGITS_LIMIT = 120  # test images corrupted on small-image data (digits: 14 corruptions × 5 severities × 2 models)


def numbers(results: dict) -> dict[str, float | None]:
    """Flat numbers: ``acc|<model>|<corruption>`` (mean over severities), ``clean|<model>``, ``mean|<model>``,
    ``mce``, ``rel_mce`` (None where undefined for every corruption), ``ce|<corruption>`` and ``rel_ce|<corruption>``
    (each corruption's CE and relative CE, None where undefined), ``undefined|<ce or relative_ce>|<corruption>``
    (1: left out of the mean), ``n`` (images), ``levels`` (severities per corruption)."""
    out: dict[str, float | None] = {"n": results["images"], "levels": len(results["severities"])}
    for model, r in results["corruption"].items():
        out[f"clean|{model}"] = r["clean_accuracy"]
        out[f"mean|{model}"] = r["mean_accuracy"]
        for c, v in r["corruption_accuracy"].items():
            out[f"acc|{model}|{c}"] = v
    out["mce"] = results["mce"]
    out["rel_mce"] = results["relative_mce"]
    for kind, key in (("ce", "ce"), ("relative_ce", "rel_ce")):
        for c, x in (results.get(kind) or {}).items():
            out[f"{key}|{c}"] = x
    for kind, names in results["undefined"].items():
        for c in names:
            out[f"undefined|{kind}|{c}"] = 1.0
    return out


def margin(a: float, b: float, trials: float) -> float:
    """Two standard errors of the difference of two accuracies over ``trials`` predictions each."""
    return 2 * math.sqrt((a * (1 - a) + b * (1 - b)) / max(1.0, trials)) if trials else 0.0


def verdicts(n: dict) -> dict[str, tuple[str, float, float]]:
    """Per corruption: ``(helps | hurts | within noise, difference robust − standard, margin)``."""
    trials = (n.get("n") or 0) * (n.get("levels") or 1)
    out = {}
    for c in CORRUPTIONS:
        a, b = n.get(f"acc|standard|{c}"), n.get(f"acc|robust|{c}")
        if a is None or b is None:
            continue
        m = margin(a, b, trials)
        delta = b - a
        out[c] = ("helps" if delta > m else "hurts" if delta < -m else "within noise", delta, m)
    return out


def findings(n: dict) -> list[str]:
    """The report's findings, computed from `numbers` alone."""
    out = []
    images = int(n.get("n") or 0)
    v = verdicts(n)
    helped = [c for c, (w, _, _) in v.items() if w == "helps"]
    hurt = [c for c, (w, _, _) in v.items() if w == "hurts"]
    same = [c for c, (w, _, _) in v.items() if w == "within noise"]

    def listed(names: list[str]) -> str:
        return ", ".join(f"{c} ({v[c][1]:+.3f})" for c in names)

    base, ours = n.get("clean|standard"), n.get("clean|robust")
    if base is not None and ours is not None:
        out.append(f"Clean accuracy: standard {base:.3f}, adversarially trained {ours:.3f} ({ours - base:+.3f}; {images} test images).")
    if helped:
        out.append(f"Adversarial training **helps** with {len(helped)} of {len(v)} corruptions: {listed(helped)} (accuracy over the severities, robust − standard).")
    if hurt:
        out.append(f"It **hurts** with {len(hurt)}: {listed(hurt)}.")
    if same:
        out.append(f"Within sampling noise for {len(same)}: {', '.join(same)}.")
    if v:
        widest = max(m for _, _, m in v.values())
        out.append(
            f"A difference counts when it exceeds two standard errors of the difference of two accuracies over "
            f"{images} images × {int(n.get('levels') or 1)} severities (at most ±{widest:.3f} here)."
        )
    high = [c for c in HIGH_FREQUENCY if c in v]
    low = [c for c in LOW_FREQUENCY if c in v]
    if high and low:
        high_mean = sum(v[c][1] for c in high) / len(high)
        low_mean = sum(v[c][1] for c in low) / len(low)
        noise = max(v[c][2] for c in high + low)  # the widest single margin: a bound on the groups' means' noise
        if abs(high_mean - low_mean) <= noise:
            how = (f"the gap between the two groups is within sampling noise (±{noise:.3f}), so this run neither "
                   "confirms nor contradicts Yin et al. 2019 (adversarial training helps with high-frequency "
                   "corruptions such as noise and hurts with low-frequency ones such as fog and contrast)")  # fmt: skip
        elif high_mean > low_mean:
            how = ("as Yin et al. 2019 report (adversarial training trades robustness to low-frequency corruptions "
                   "for robustness to high-frequency ones)")  # fmt: skip
        else:
            how = ("unlike Yin et al. 2019, who found adversarial training helps most with high-frequency corruptions "
                   "and hurts with fog and contrast")  # fmt: skip
        out.append(f"Noise corruptions change by {high_mean:+.3f} on average, fog and contrast by {low_mean:+.3f}: {how}.")
    mce, rel = n.get("mce"), n.get("rel_mce")
    total = len(v)

    def left_out(kind: str) -> list[str]:
        return [c for c in CORRUPTIONS if n.get(f"undefined|{kind}|{c}")]

    if mce is not None:
        skip = left_out("ce")
        over = f" over {total - len(skip)} of {total} corruptions ({', '.join(skip)}: the standard model makes no error)" if skip else ""
        verdict = _against_one(mce, _ratios(n, "ce"), "more errors under corruption than the standard model",
                               "fewer errors under corruption than the standard model", "about as many errors as the standard model")  # fmt: skip
        out.append(
            f"mCE of the adversarially trained model with the standard one as reference: {mce:.3f}{over}, the mean of "
            f"each corruption's ratio of errors (1 = as many): {verdict}."
        )
    skip = left_out("relative_ce")
    if skip:
        out.append(
            f"Relative CE is undefined for {', '.join(skip)}: the standard model loses no accuracy to "
            f"{'it' if len(skip) == 1 else 'them'} (its corrupted error is not above its clean error), so there is "
            "nothing to compare against; relative mCE averages the other corruptions."
        )
    if rel is not None:
        verdict = _against_one(rel, _ratios(n, "rel_ce"), "it loses more accuracy to corruption than the standard one",
                               "it loses less accuracy to corruption than the standard one",
                               "it loses about as much accuracy to corruption as the standard one")  # fmt: skip
        out.append(
            f"Relative mCE {rel:.3f} (over {len(_ratios(n, 'rel_ce')) or total - len(skip)} corruptions; each model's errors counted from its own "
            f"clean error): {verdict}."
        )
    return out


def _ratios(n: dict, key: str) -> list[float]:
    """Each corruption's CE (``key`` "ce") or relative CE ("rel_ce") where it is defined."""
    return [v for k, v in n.items() if k.startswith(key + "|") and v is not None and math.isfinite(v)]


def _against_one(mean: float, ratios: list[float], above: str, below: str, same: str) -> str:
    """``above`` or ``below`` when the mean of the per-corruption ratios is away from 1 by more than two standard
    errors of that mean (the corruptions' own spread), else ``same`` with the spread that makes it so."""
    if len(ratios) < 2:
        return above if mean > 1 else below if mean < 1 else same
    se = statistics.stdev(ratios) / math.sqrt(len(ratios))
    if abs(mean - 1) <= 2 * se:
        return (
            f"{same}: the {len(ratios)} corruptions disagree (from {min(ratios):.2f} to {max(ratios):.2f}), and the mean "
            f"is within two standard errors (±{2 * se:.3f}) of 1"
        )
    return f"{above if mean > 1 else below} (the mean is beyond two standard errors of 1, ±{2 * se:.3f}; the corruptions range from {min(ratios):.2f} to {max(ratios):.2f})"


def headlines(results: dict) -> list[Headline]:
    rows = [Headline("clean|standard", "standard clean accuracy"), Headline("clean|robust", "robust clean accuracy"),
            Headline("mean|standard", "standard mean corruption accuracy"),
            Headline("mean|robust", "robust mean corruption accuracy"),
            Headline("mce", "mCE (robust, standard as reference)"),
            Headline("rel_mce", "relative mCE (robust, standard as reference)")]  # fmt: skip
    return rows


_ERRORS = ("reference", "ce", "relative_ce", "mce", "relative_mce", "undefined")  # kept once, at the top level


def _number(value: float | None) -> float | None:
    """JSON has no NaN: an undefined ratio is None."""
    return None if value is None or math.isnan(value) else value


def _cell(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.3f}"


def _train_eps(text: str | None, side: int) -> float:
    """The budget given, else RobustBench's 8/255 on 32-pixel images and larger, and 0.1 on smaller ones
    (digits: the budget defense-matrix and adversarial-training-ood train, so the model is cached).
    On the CIFAR prefix 0.1 (25/255) cost 22 points of clean accuracy and made every corruption worse;
    8/255 cost 8 points and showed Yin et al.'s trade-off."""
    if text:
        return parse_eps(text, "train_eps")
    return 8 / 255 if side >= 32 else 0.1


def run(
    options: RecipeOptions,
    train_eps: Annotated[str | None, "budget of adversarial training (FGSM from a random start, PGD-7 if FGSM overfits catastrophically; default: 8/255 on images of 32 pixels and more, as RobustBench; 0.1 on smaller ones such as digits)"] = None,
    severities: Annotated[str, "comma-separated severities (1-5)"] = "1,2,3,4,5",
    corruption_seed: Annotated[int, "seed of the on-the-fly corruptions (image i's corruption depends on it, the corruption, the severity and i)"] = 0,
) -> Path:
    """Evaluate the standard and an FGSM-adversarially-trained model on the same corrupted test images."""
    levels = [int(s) for s in severities.split(",") if s.strip()]

    def once(o: RecipeOptions) -> Path:
        return _once(o, train_eps, levels, corruption_seed)

    return over_seeds(NAME, TITLE, options, once, numbers, findings, headlines)


def _once(options: RecipeOptions, train_eps: str | None, levels: list[int], corruption_seed: int) -> Path:
    ctx = start(NAME, options)
    eps = _train_eps(train_eps, min(ctx.test.info.shape[1:]))
    standard = ctx.classifier()
    robust, training = ctx.robust_classifier(standard, eps)
    test = ctx.test
    if options.limit is None and min(test.info.shape[1:]) < 32:
        test = test.take(DIGITS_LIMIT)
    files = official_folder(options.dataset, options.root) if options.root is not None else None
    result = corruption_accuracy(robust, test, severities=levels, seed=corruption_seed, reference=standard, files=files)
    ref = result.reference
    assert ref is not None
    n = result.images
    results = {
        "train_eps": eps,
        "training": {"used": training["used"], "fallback": training["fallback"]},
        "images": n,
        "severities": levels,
        "source": result.source,
        "skipped": result.skipped,
        "corruption": {"standard": ref.as_dict(), "robust": {k: x for k, x in result.as_dict().items() if k not in _ERRORS}},
        "mce": _number(result.mce),
        "relative_mce": _number(result.relative_mce),
        "ce": {c: _number(x) for c, x in result.ce.items()},
        "relative_ce": {c: _number(x) for c, x in result.relative_ce.items()},
        "undefined": result.undefined,
    }
    nums = numbers(results)
    results["findings"] = findings(nums)
    results["finding"] = " ".join(results["findings"])
    grids = {"standard": ref.accuracy, "robust": result.accuracy}
    for label, grid in grids.items():
        plots.accuracy_heatmap({c: {str(s): a for s, a in row.items()} for c, row in grid.items()},
                               ctx.folder.figure(f"heatmap_{label}"), title=f"{label}: accuracy ({n} images)",
                               row_title="corruption", column_title="severity")  # fmt: skip
    v = verdicts(nums)
    rows = [
        [c, f"{ref.corruption_accuracy[c]:.3f}", f"{result.corruption_accuracy[c]:.3f}", f"{v[c][1]:+.3f}", f"±{v[c][2]:.3f}",
         v[c][0], _cell(result.ce[c]), _cell(result.relative_ce[c])]
        for c in result.accuracy
    ]  # fmt: skip
    per_severity = [
        [c, *(f"{ref.accuracy[c][s]:.3f} / {result.accuracy[c][s]:.3f}" for s in levels)] for c in result.accuracy
    ]
    eps_text = f"{round(eps * 255)}/255" if abs(eps * 255 - round(eps * 255)) < 1e-6 and eps < 0.05 else f"{eps:g}"
    lines = header(ctx, TITLE, SUMMARY) + [
        f"Robust model: adversarial training with {training['used']} at ε = {eps_text}. Corrupted images: "
        f"{result.source}; corruption seed {corruption_seed}. {n} test images, severities {', '.join(map(str, levels))}. "
        f"Corruptions: {HENDRYCKS_2019}. Adversarial training and corruptions by frequency: {YIN_2019}.",
        "",
        *[f"- `{c}` skipped: {why}." for c, why in result.skipped.items()],
        *([""] if result.skipped else []),
        "## Findings",
        "",
        *[f"- {f}" for f in results["findings"]],
        "",
        f"## Accuracy per corruption (mean over the severities; {n} images each)",
        "",
        "CE and relative CE are the adversarially trained model's, with the standard model as reference "
        "(Hendrycks & Dietterich 2019: CE = Σ_s E_robust / Σ_s E_standard; relative CE subtracts each model's clean "
        "error first). Below 1: fewer errors than the standard model. Relative CE divides by the accuracy the standard "
        "model loses to the corruption: where that is a few images, the ratio is mostly noise.",
        "",
        table(["corruption", "standard", "robust", "difference", "noise margin", "adversarial training", "CE", "relative CE"], rows),
        "",
        f"Mean corruption accuracy: standard {ref.mean_accuracy:.3f}, robust {result.mean_accuracy:.3f}; clean: "
        f"standard {ref.clean_accuracy:.3f}, robust {result.clean_accuracy:.3f}. mCE {_cell(result.mce or math.nan)}, "
        f"relative mCE {_cell(result.relative_mce or math.nan)} (each over the corruptions where it is defined).",
        "",
        f"## Accuracy per severity (standard / robust; {n} images each)",
        "",
        table(["corruption", *[f"severity {s}" for s in levels]], per_severity),
        "",
        look(LOOK),
        "",
        *[f"![{f}]({f})" for f in ctx.folder.figures],
    ]
    classes = len(ctx.test.info.classes)
    images = f"the {n} test images"
    checks = [
        labelled(model_learned(ref.clean_accuracy, classes, n), f"standard, {images}"),
        *[labelled(c, f"robust, {c.values['n']} images") for c in result.checks],
        labelled(defense_cost(ref.clean_accuracy, result.clean_accuracy), f"robust, {images}"),
    ]
    return finish(ctx, results, lines, checks)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
