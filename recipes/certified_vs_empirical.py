"""Recipe 9 — certified robustness (randomised smoothing) under the empirical PGD-L2 curve of the same
smoothed classifier, for σ in 0.12 / 0.25 / 0.5 (Cohen et al. 2019; Salman et al. 2019)."""

import dataclasses
from itertools import pairwise
from pathlib import Path
from typing import Annotated

from robustkit.app import plots
from robustkit.app.findings import compare_accuracies
from robustkit.app.runner import Headline, RecipeOptions, finish, header, look, over_seeds, start, table
from robustkit.app.sanity import labelled
from robustkit.core.papers import COHEN_2019, SALMAN_2019
from robustkit.evaluate import accuracy, certified_accuracy, contract_checks, empirical_accuracy
from robustkit.evaluate.certify import certified_vs_empirical_check
from robustkit.registry import defense

NAME = "certified-vs-empirical"
TITLE = "Certified vs empirical robustness"
SUMMARY = "Randomised smoothing's certified L2 accuracy under PGD-L2 on the same smoothed classifier, σ = 0.12/0.25/0.5."
ORDER = 9
DEFAULT_DATASET = "cifar10"
SIGMAS = "0.12,0.25,0.5"
RADII = "0,0.25,0.5,0.75,1"
LOOK = (
    "Each colour is one σ: its solid line is the certified accuracy (a lower bound on the smoothed classifier's "
    "robust accuracy), its dashed line the accuracy PGD-L2 leaves (an upper bound). The truth lies between them; "
    "a solid line above its dashed one is impossible and flags a bug. Look at how a larger σ lowers the curve at "
    "radius 0 and stretches it to larger radii, and at where each solid line drops to 0 (the cap of n samples)."
)
PAPER_N = 100_000  # the paper's n


def _key(kind: str, sigma: float, r: float | None = None) -> str:
    return f"{kind}@{sigma:g}" if r is None else f"{kind}@{sigma:g}@{r:g}"


def numbers(results: dict) -> dict[str, float | None]:
    """The curves as flat numbers: ``certified@σ@r``, ``empirical@σ@r``, ``abstain@σ``, ``base_clean@σ``,
    ``max_radius@σ``, and ``images``, ``n``, ``n0``, ``alpha``."""
    out: dict[str, float | None] = {k: results[k] for k in ("images", "n", "n0", "alpha")}
    for row in results["sigmas"]:
        s = row["sigma"]
        for r, c, e in zip(row["radii"], row["certified"], row["empirical"], strict=True):
            out[_key("certified", s, r)], out[_key("empirical", s, r)] = c, e
        out[_key("abstain", s)], out[_key("base_clean", s)] = row["abstain_rate"], row["base_clean"]
        out[_key("max_radius", s)] = row["max_radius"]
    return out


def _sigmas(n: dict) -> list[float]:
    return sorted(float(k.split("@")[1]) for k in n if k.startswith("abstain@"))


def _radii(n: dict, sigma: float) -> list[float]:
    prefix = f"certified@{sigma:g}@"
    return sorted(float(k[len(prefix) :]) for k in n if k.startswith(prefix))


def _reach(n: dict, sigma: float) -> float:
    """The largest radius of the grid at which some image is certified (0 when none is)."""
    return max([r for r in _radii(n, sigma) if r > 0 and n[_key("certified", sigma, r)] > 0], default=0.0)


def findings(n: dict) -> list[str]:
    """The report's findings, computed from `numbers` alone."""
    out = []
    images, samples, alpha = n.get("images"), n.get("n"), n.get("alpha")
    on = f" on {images:g} test images" if images else ""
    sigmas = [s for s in _sigmas(n) if 0.0 in _radii(n, s)]
    for s in sigmas:
        cert = {r: n[_key("certified", s, r)] for r in _radii(n, s)}
        emp = {r: n[_key("empirical", s, r)] for r in _radii(n, s)}
        reach = _reach(n, s)
        sentence = (
            f"σ={s:g}{on}: the smoothed classifier is certified right on {cert[0.0]:.3f} of the images at radius 0 "
            f"(its vote is right on {emp[0.0]:.3f}; CERTIFY abstained on {n[_key('abstain', s)]:.3f})"
        )
        if reach > 0:
            sentence += (
                f"; at radius {reach:g}, the largest with a certified image, its true robust accuracy lies between "
                f"{cert[reach]:.3f} (certified) and {emp[reach]:.3f} (what PGD-L2 leaves)"
            )
        else:
            sentence += "; no image is certified at any larger radius of the grid"
        above = [r for r in cert if cert[r] > emp[r]]
        if above:
            sentence += (
                f". Certified accuracy exceeds the empirical one at radius {', '.join(f'{r:g}' for r in above)}, "
                "which cannot happen when both are right: see the sanity check before using these numbers"
            )
        out.append(sentence + ".")
    if len(sigmas) >= 2:
        clean = [n[_key("certified", s, 0.0)] for s in sigmas]
        reach = [_reach(n, s) for s in sigmas]
        whole = compare_accuracies(clean[0], clean[-1], images)  # the smallest σ against the largest
        steps = [compare_accuracies(a, b, images) for a, b in pairwise(clean)]
        if whole.down and reach[-1] > reach[0]:
            verdict = "Larger noise trades accuracy at radius 0 for reach, as in the paper"
        elif reach[-1] > reach[0] and not whole.beyond:
            verdict = (
                "Larger noise reaches larger radii here, but its accuracy at radius 0 is within sampling noise of the "
                "smallest σ's, so this run does not show the paper's cost at radius 0"
            )
        else:
            verdict = "Here larger noise does not trade accuracy at radius 0 for reach as in the paper"
        listed = ", ".join(f"{c:.3f}" for c in clean)
        reaches = ", ".join(f"{r:g}" for r in reach)
        changes = "; ".join(
            f"σ={a:g} → {b:g}: {d.delta:+.3f}, {'beyond' if d.beyond else 'within'} sampling noise"
            for (a, b), d in zip(pairwise(sigmas), steps, strict=True)
        )
        noise = f" (±{whole.tolerance:.3f} on {images:g} images)" if images else ""
        out.append(
            f"{verdict}: certified accuracy at radius 0 is {listed} and the largest radius with a certified image "
            f"is {reaches} for σ = {', '.join(f'{s:g}' for s in sigmas)} ({changes}{noise})."
        )
    if samples:
        capped = [(s, n[_key("max_radius", s)]) for s in sigmas if max(_radii(n, s)) > n[_key("max_radius", s)]]
        if capped:
            listed = ", ".join(f"{cap:.2f} at σ={s:g}" for s, cap in capped)
            out.append(
                f"With n={samples:g} samples per image and α={alpha:g} no radius above {listed} can be certified "
                f"(σ·Φ⁻¹(α^(1/n)), reached when every sample votes for the class): the certified curve is 0 beyond "
                f"that by the sample size, not by the model. The paper's n={PAPER_N} allows "
                "about 3.8σ; raise --n for larger radii (the cost grows with n)."
            )
    return out


def headlines(results: dict | None = None) -> list[Headline]:
    """The headline numbers (the paper's are for CIFAR-10 ResNet-110 with n=100 000, not comparable here)."""
    sigmas = [row["sigma"] for row in results["sigmas"]] if results else [0.12, 0.25, 0.5]
    out = []
    for s in sigmas:
        out.append(Headline(_key("certified", s, 0.5), f"certified accuracy at radius 0.5, σ={s:g}"))
        out.append(Headline(_key("empirical", s, 0.5), f"PGD-L2 accuracy at radius 0.5, σ={s:g}"))
    return out


def run(
    options: RecipeOptions,
    sigmas: Annotated[str, "comma-separated noise levels σ (pixel units of [0, 1] images)"] = SIGMAS,
    radii: Annotated[str, "comma-separated L2 radii of the curves"] = RADII,
    n: Annotated[int, "noise samples per image that certify (the paper: 100000)"] = 200,
    n0: Annotated[int, "noise samples per image that select the class (the paper: 100)"] = 100,
    alpha: Annotated[float, "failure probability of each certificate"] = 0.001,
    images: Annotated[int, "test images certified and attacked (the first ones)"] = 50,
    steps: Annotated[int, "PGD-L2 steps"] = 10,
    eot: Annotated[int, "noise samples per PGD-L2 gradient (EOT over the noise)"] = 8,
    judge: Annotated[int, "noise samples of the vote that judges each adversarial image"] = 100,
    noise_epochs: Annotated[int | None, "epochs of noise fine-tuning per σ (default: a third of the profile's)"] = None,
) -> Path:
    """Fine-tune the classifier on Gaussian noise per σ, certify it, attack its smoothed classifier."""

    def once(o: RecipeOptions) -> Path:
        return _once(o, sigmas, radii, n, n0, alpha, images, steps, eot, judge, noise_epochs)

    return over_seeds(NAME, TITLE, options, once, numbers, findings, headlines)


def _once(
    options: RecipeOptions,
    sigmas: str,
    radii: str,
    n: int,
    n0: int,
    alpha: float,
    images: int,
    steps: int,
    eot: int,
    judge: int,
    noise_epochs: int | None,
) -> Path:
    sigma_list = [float(s) for s in sigmas.split(",") if s.strip()]
    radius_list = sorted({float(r) for r in radii.split(",") if r.strip()} | {0.0})
    ctx = start(NAME, options)
    standard = ctx.classifier()  # cached, shared with the other recipes; fine-tuned with noise per σ
    epochs = noise_epochs or max(1, ctx.config.epochs // 3)
    config = dataclasses.replace(ctx.config, epochs=epochs)
    test = ctx.test.take(images)
    k = len(test)
    standard_clean = accuracy(standard, test.x, test.y)
    checks = [labelled(c, f"standard classifier, {k} images") for c in contract_checks(standard, test.x, test.y)]
    rows, curves = [], {}
    for sigma in sigma_list:
        trainer = defense(
            "gaussian_augmentation", sigma=sigma, finetune=True, train_config=config, progress=options.progress
        )
        base = trainer.apply(standard, ctx.train).to(ctx.device)
        cert = certified_accuracy(base, test.x, test.y, sigma=sigma, n0=n0, n=n, alpha=alpha, radii=radius_list,
                                  seed=options.seed)  # fmt: skip
        emp = empirical_accuracy(base, test.x, test.y, sigma=sigma, radii=radius_list, steps=steps, samples=eot, n=judge,
                                 seed=options.seed)  # fmt: skip
        base_clean = cert.base_accuracy
        own = [c for c in cert.checks if c.name == "smoothing_learned"] + emp.checks  # the base is robustkit's own
        own.append(certified_vs_empirical_check(cert, emp))
        checks += [labelled(c, f"σ={sigma:g}, {c.values.get('n', k)} images") for c in own]
        curves[f"σ={sigma:g}"] = (cert.radii, cert.accuracy, emp.accuracy)
        rows.append({
            "sigma": sigma, "radii": cert.radii, "certified": cert.accuracy, "empirical": emp.accuracy,
            "abstain_rate": cert.abstain_rate, "abstained": cert.abstained, "base_clean": base_clean,
            "max_radius": cert.max_radius, "certify_seconds": cert.seconds, "attack_seconds": emp.seconds,
            "attack": emp.attack,
        })  # fmt: skip
    plots.certified_curves(curves, ctx.folder.figure("certified_vs_empirical"), title="certified vs PGD-L2", images=k)
    results = {"sigmas": rows, "standard_clean": standard_clean, "images": k, "n": n, "n0": n0, "alpha": alpha, "steps": steps, "eot": eot}
    results["findings"] = findings(numbers(results))
    per_image = (n0 + n) * k
    lines = header(ctx, TITLE, SUMMARY) + [
        "## Findings",
        "",
        *[f"- {f}" for f in results["findings"]],
        "",
        f"## Certified and empirical accuracy (the first {k} test images)",
        "",
        f"Certified: `CERTIFY` with n0={n0} and n={n} noise samples per image, α={alpha:g} (the paper: n0=100, "
        f"n=100 000, α=0.001); an abstention counts as wrong. Empirical: PGD-L2 ({steps} steps, {eot} noise samples "
        f"per gradient) on the smoothed classifier, each adversarial image judged by a vote of {judge} noisy samples "
        "(an image counts when the vote is right on it and at every smaller radius; at radius 0 there is no attack: "
        "the PGD-L2 columns give the vote's clean accuracy there).",
        "",
        table(
            ["L2 radius", *[f"{kind} σ={s:g}" for s in sigma_list for kind in ("certified", "PGD-L2")]],
            [
                [f"{r:g}", *[f"{row[kind][j]:.3f}" for row in rows for kind in ("certified", "empirical")]]
                for j, r in enumerate(rows[0]["radii"])
            ],
        ),
        "",
        f"## Each base classifier, without noise (the first {k} test images)",
        "",
        table(
            ["σ", "base classifier, no noise", "abstained (CERTIFY)", "largest radius n can certify"],
            [["none (the standard classifier)", f"{standard_clean:.3f}", "–", "–"]]
            + [[f"{row['sigma']:g}", f"{row['base_clean']:.3f}", f"{row['abstain_rate']:.3f}", f"{row['max_radius']:.3f}"]
               for row in rows],
        ),
        "",
        f"Certification ran {n0 + n} forward passes of the base classifier per image ({per_image} per σ; "
        + ", ".join(f"{row['certify_seconds']:.1f} s at σ={row['sigma']:g}" for row in rows)
        + "); PGD-L2 took "
        + ", ".join(f"{row['attack_seconds']:.1f} s" for row in rows)
        + ". "
        "Each base classifier is the standard classifier (the model named at the top) fine-tuned for "
        f"{epochs} epoch{'s' if epochs != 1 else ''} on Gaussian-noised training images at its σ (the paper trains "
        "its base classifier on such noise from the start).",
        "",
        look(LOOK),
        "",
        "![certified vs empirical](certified_vs_empirical.png)",
        "",
        f"Papers: {COHEN_2019}; {SALMAN_2019}.",
    ]
    return finish(ctx, results, lines, checks)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
