"""Recipe 4 — does FGSM adversarial training cost OOD detection? (the first two write-ups)"""

import math
from pathlib import Path
from typing import Annotated

from robustkit.app import plots
from robustkit.app.findings import compare_aurocs
from robustkit.app.runner import Headline, RecipeOptions, comparison, finish, header, look, over_seeds, start, table
from robustkit.app.sanity import labelled
from robustkit.core.checks import parse_eps
from robustkit.core.errors import DatasetNotFoundError
from robustkit.evaluate import (
    accuracy,
    catastrophic_overfitting,
    defense_cost,
    eps_sweep,
    model_learned,
    monotone_in_eps,
    ood,
    ood_auroc,
)
from robustkit.registry import attack, detector

NAME = "adversarial-training-ood"
TITLE = "Adversarial training and OOD detection"
SUMMARY = "Standard vs FGSM-adversarially-trained model: accuracy under FGSM and max-softmax/max-logit OOD detection."
ORDER = 4
DEFAULT_DATASET = "cifar10"
LOOK = (  # the report's paragraph beside the figures
    "In the accuracy curves the robust models should stay above the standard one as ε grows, and may start "
    "lower at ε=0 (the clean cost of the defense). In the histograms and ROC curves, compare each score between "
    "the standard and the robust models: more overlap between the ID and OOD histograms, or a ROC curve nearer "
    "the diagonal, for a robust model is the cost in OOD detection that this recipe asks about."
)
GRID = "0,0.01,0.02,0.05,0.1,0.2"
CIFAR100_SUBSET = "cifar100:bottle,clock,plate,telephone"
SCORES = ("max_softmax", "max_logit")
MONITOR = 256  # training images adversarial training is monitored on (Context.robust_classifier)
OUTCOME = {"collapse": "collapse", "hurt": "get worse", "helped": "improve", "unchanged": "stay about the same"}
# What each write-up compared: its OOD set, the FGSM budget it trained with, and its numbers
# (``None``: the write-up gives no number; the first one describes a collapse in words).
WRITE_UPS = {
    "fakedata": {
        "which": "the first write-up",
        "train_eps": 2 / 255,
        "saw": "collapse",
        "numbers": {("standard", "max_logit", "AUROC"): 0.91},
        "words": {("robust", "max_logit", "AUROC"): "< 0.5 (collapse: noise scored more confident; no number given)",
                  ("robust", "max_softmax", "AUROC"): "< 0.5 (collapse: noise scored more confident; no number given)"},
    },
    "cifar100": {
        "which": "the second write-up",
        "train_eps": 0.1,
        "saw": "helped",
        "numbers": {
            ("standard", "max_logit", "AUROC"): 0.63,
            ("robust", "max_logit", "AUROC"): 0.65,
            ("standard", "max_logit", "AUPR-IN"): 0.89,
            ("robust", "max_logit", "AUPR-IN"): 0.90,
        },
        "words": {},
    },
}  # fmt: skip


def eps_label(eps: float) -> str:
    """2/255 for multiples of 1/255, else the decimal."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and eps < 0.05 else f"{eps:g}"


def numbers(results: dict) -> dict[str, float | None]:
    """Flat numbers: ``<set>|<model>|<score>|<metric>``, ``clean|<model>``, ``fgsm@<ε>|<model>``,
    ``overfit|<model>`` (1/0), ``fallback|<model>`` (1/0), ``n_ood|<set>``, ``images`` (ID test images)."""
    out: dict[str, float | None] = {}
    for model, acc in results["clean_accuracy"].items():
        out[f"clean|{model}"] = acc
    for model, sweep in results["sweeps"].items():
        for e, a in zip(sweep["eps"], sweep["accuracy"], strict=True):
            out[f"fgsm@{e:g}|{model}"] = a
    for key, m in results["ood"].items():
        for metric in ("AUROC", "AUPR-IN"):
            out[f"{key}|{metric}"] = m[metric]
    for model, t in results["training"].items():
        out[f"overfit|{model}"] = float(bool(t["runs"][0]["verdict"]["overfitting"]))
        out[f"fallback|{model}"] = float(t["fallback"])
    for name, n in results["ood_sizes"].items():
        out[f"n_ood|{name}"] = n
    out["images"] = results.get("images_measured")
    return out


def _models(n: dict) -> list[str]:
    return sorted({k.split("|")[1] for k in n if k.startswith("clean|") and k != "clean|standard"})


def _sets(n: dict) -> list[str]:
    return list(dict.fromkeys(k.split("|")[1] for k in n if k.startswith("n_ood|")))


def match(family: str, models: list[str]) -> str | None:
    """The robust model trained at the write-up's budget for this OOD set (else the first)."""
    want = WRITE_UPS.get(family, {}).get("train_eps")
    for m in models:
        if want is not None and abs(parse_eps(m.split("@")[1]) - want) < 1e-9:
            return m
    return models[0] if models else None


def findings(n: dict) -> list[str]:
    """The report's findings, computed from `numbers` alone."""
    out = []
    for model in _models(n):
        overfit, fallback = n.get(f"overfit|{model}"), n.get(f"fallback|{model}")
        if overfit:
            how = "so it was trained again with PGD, which this row uses" if fallback else "and this row uses it anyway"
            out.append(
                f"FGSM training at ε={model.split('@')[1]} overfit catastrophically (FGSM accuracy on the monitor "
                f"far above PGD accuracy), {how}."
            )
        base, ours = n.get("clean|standard"), n.get(f"clean|{model}")
        if base is not None and ours is not None:
            out.append(f"{model} has clean accuracy {ours:.3f} against the standard model's {base:.3f} ({ours - base:+.3f}).")
    for ood_set in _sets(n):
        family = ood_set.split(":")[0]
        size = n.get(f"n_ood|{ood_set}")
        ref = WRITE_UPS.get(family)
        for model in _models(n):
            before = n.get(f"{ood_set}|standard|max_softmax|AUROC")
            after = n.get(f"{ood_set}|{model}|max_softmax|AUROC")
            if before is None or after is None:
                continue
            change = compare_aurocs(before, after, n.get("images"), size)  # the noise of a difference of two AUROCs
            chance = change.tolerance / math.sqrt(2)  # and of one AUROC about 0.5 (the ood_auroc check's)
            if before >= 0.5 and after < 0.5 - chance:
                what, saw = f"made OOD detection collapse (max-softmax AUROC {after:.3f} < 0.5: OOD scored more confident than ID)", "collapse"
            elif change.down:
                near = ", about chance" if after < 0.5 + chance else ""
                what, saw = f"hurt OOD detection (max-softmax AUROC {before:.3f} → {after:.3f}{near})", "hurt"
            elif change.up:
                what, saw = f"helped OOD detection (max-softmax AUROC {before:.3f} → {after:.3f})", "helped"
            else:
                what, saw = f"left OOD detection unchanged within sampling noise (max-softmax AUROC {before:.3f} → {after:.3f}, {change.noise() or 'images not counted'})", "unchanged"
            sentence = f"Against `{ood_set}`, {model} {what}"
            if ref is not None and model == match(family, _models(n)):
                if saw == ref["saw"]:
                    sentence += f", as {ref['which']} saw"
                else:
                    sentence += f", unlike {ref['which']}, which saw OOD detection {OUTCOME[ref['saw']]}"
            out.append(sentence + ".")
    return out


def headlines(results: dict) -> list[Headline]:
    """The headline numbers, each OOD comparison beside the write-up that made it."""
    n_sets = results["ood_sets"]
    models = [m for m in results["clean_accuracy"] if m != "standard"]
    rows = [Headline("clean|standard", "standard clean accuracy")]
    rows += [Headline(f"clean|{m}", f"{m} clean accuracy") for m in models]
    for ood_set in n_sets:
        family = ood_set.split(":")[0]
        ref = WRITE_UPS.get(family, {"numbers": {}, "words": {}})
        robust = match(family, models)
        for label, model in (("standard", "standard"), ("robust", robust)):
            for score, metric in (("max_logit", "AUROC"), ("max_softmax", "AUROC")):
                value = ref["numbers"].get((label, score, metric))
                rows.append(Headline(f"{ood_set}|{model}|{score}|{metric}", f"{model} {score} {metric} vs {family}", value,
                                     ref["words"].get((label, score, metric), "")))  # fmt: skip
    return rows


def default_sets(dataset: str) -> list[str]:
    return ["fakedata", CIFAR100_SUBSET] if dataset.split(":")[0] == "cifar10" else ["fakedata"]


def run(
    options: RecipeOptions,
    train_eps: Annotated[str | None, "comma-separated FGSM budgets of adversarial training, one robust model each (default: 0.1 for small images, else 2/255,0.1: the two write-ups' budgets)"] = None,
    targeted: Annotated[bool, "adversarial training attacks a random other class"] = False,
    random_start: Annotated[bool, "FGSM training starts from a random point of the ε-ball (Wong et al. 2020); --no-random-start is the write-ups' plain FGSM"] = True,
    ood_sets: Annotated[str | None, "comma-separated OOD sets (';' between sets when a set lists classes); default: fakedata, plus the CIFAR-100 subset for CIFAR-10"] = None,
    eps: Annotated[str, "comma-separated FGSM budgets of the evaluation sweep"] = GRID,
) -> Path:
    """Train with FGSM examples of the current model every batch (``--train-eps``: 2/255 in the first write-up, 0.1 in the second); score FakeData and the CIFAR-100 subset."""
    sets = _parse_sets(ood_sets) if ood_sets else default_sets(options.dataset)
    train = _train_eps(train_eps, options.dataset)
    return over_seeds(
        NAME,
        TITLE,
        options,
        lambda o: _once(o, train, targeted, random_start, sets, ood_sets is not None, eps),
        numbers,
        findings,
        headlines,
    )


def _parse_sets(text: str) -> list[str]:
    if ";" in text:
        return [s.strip() for s in text.split(";") if s.strip()]
    return [text.strip()] if ":" in text else [s.strip() for s in text.split(",") if s.strip()]


def _train_eps(text: str | None, dataset: str) -> list[float]:
    if text:
        return [parse_eps(e, "train_eps") for e in text.split(",")]
    small = dataset in ("digits", "mnist")
    return [0.1] if small else [2 / 255, 0.1]


def _once(options, train, targeted, random_start, sets, explicit, eps) -> Path:
    ctx = start(NAME, options)
    standard = ctx.classifier()
    models, training = {"standard": standard}, {}
    for e in train:
        label = f"robust@{eps_label(e)}"
        models[label], training[label] = ctx.robust_classifier(standard, e, random_start=random_start, targeted=targeted)
    monitor = min(MONITOR, len(ctx.train))  # the training images robust_classifier monitors every epoch
    outliers, missing = {}, []
    for name in sets:
        kwargs = {"shape": ctx.test.info.shape, "size": len(ctx.test), "seed": options.seed} if name == "fakedata" else {}
        try:
            data = ctx.load(name, split="test", **kwargs)
        except DatasetNotFoundError as err:
            if explicit:
                raise
            missing.append(f"`{name}` was not scored: {err}")
            continue
        if data.info.shape != ctx.test.info.shape:
            if explicit:
                raise ValueError(f"OOD set {name} has images of shape {data.info.shape}, the ID set {ctx.test.info.shape}")
            missing.append(f"`{name}` was not scored: its images are {data.info.shape}, the ID set's {ctx.test.info.shape}")
            continue
        outliers[name] = data
    sweeps, metrics = {}, {}
    curves: dict[tuple[str, str], dict] = {}  # (OOD set, score) -> {model: (ID scores, OOD scores)}
    for label, model in models.items():
        sweeps[label] = eps_sweep(attack("fgsm"), model, ctx.test.x, ctx.test.y, eps.split(",")).as_dict()
        for i, (name, data) in enumerate(outliers.items()):
            for score in SCORES:
                result = ood(detector(score).fit(model), ctx.test.x, data.x)
                metrics[f"{name}|{label}|{score}"] = result.metrics
                curves.setdefault((name, score), {})[label] = (result.id_scores, result.ood_scores)
                if i == 0:
                    file_label = label.replace("@", "_").replace("/", "-")
                    plots.score_histogram(result.id_scores, result.ood_scores,
                                          ctx.folder.figure(f"hist_{file_label}_{score}"), title=f"{label}: {score} vs {name}")  # fmt: skip
    for (name, score), by_model in curves.items():  # one ROC and one PR figure per set and score, the models overlaid
        family = name.split(":")[0]
        plots.roc_pr(by_model, ctx.folder.figure(f"roc_{family}_{score}"), ctx.folder.figure(f"pr_{family}_{score}"),
                     title=f"{score} vs {family}")  # fmt: skip
    plots.eps_curves({k: (v["eps"], v["accuracy"]) for k, v in sweeps.items()}, ctx.folder.figure("eps_curves"),
                     title="FGSM accuracy")  # fmt: skip
    clean = {k: accuracy(m, ctx.test.x, ctx.test.y) for k, m in models.items()}
    results = {
        "train_eps": train,
        "targeted": targeted,
        "random_start": random_start,
        "ood_sets": list(outliers),
        "ood_sizes": {k: len(v) for k, v in outliers.items()},
        "images_measured": len(ctx.test),
        "clean_accuracy": clean,
        "sweeps": sweeps,
        "ood": metrics,
        "training": {k: {"used": t["used"], "fallback": t["fallback"], "runs": t["runs"]} for k, t in training.items()},
        "catastrophic_overfitting": {k: t["runs"][0]["verdict"]["overfitting"] for k, t in training.items()},
    }
    n = numbers(results)
    results["findings"] = findings(n)
    results["finding"] = " ".join(results["findings"])
    training_rows = [
        [label, run["attack"], "yes" if run["verdict"]["overfitting"] else "no", run["verdict"]["reason"],
         "**used**" if run["attack"] == t["used"] else "replaced"]
        for label, t in training.items() for run in t["runs"]
    ]  # fmt: skip
    compare = []
    for h in headlines(results):
        if "vs" in h.label and (h.reference is not None or h.note):
            ref = "–" if h.reference is None else f"{h.reference:g}"
            compare.append((h.label, n.get(h.key), f"{ref} {h.note}".strip() if h.reference is not None else h.note))
    write_up_lines = []
    for name in outliers:
        w = WRITE_UPS.get(name.split(":")[0])
        if w:
            write_up_lines.append(
                f"- `{name}`: {w['which']} (its robust model trained with FGSM at ε={eps_label(w['train_eps'])}); "
                f"our row uses the model trained at ε={match(name.split(':')[0], list(training)).split('@')[1]}"
                f" ({len(outliers[name])} OOD images)."
            )
    lines = header(ctx, TITLE, SUMMARY) + [
        f"Robust models: FGSM{' with random start' if random_start else ''} at ε = "
        f"{', '.join(eps_label(e) for e in train)}{' (targeted)' if targeted else ''}, half of every batch "
        f"adversarial; {monitor} training images monitored every epoch (clean, FGSM, PGD-10 accuracy). "
        f"OOD sets: {', '.join(f'`{s}` ({len(d)} images)' for s, d in outliers.items())}.",
        "",
        *[f"{m}" for m in missing],
        *([""] if missing else []),
        f"## Adversarial training (monitored on {monitor} training images)",
        "",
        table(["model", "training attack", "catastrophic overfitting", "why", ""], training_rows),
        "",
        "## Findings",
        "",
        *[f"- {f}" for f in results["findings"]],
        "",
        f"## Against the write-ups (each beside its own comparison; here {len(ctx.test)} ID test images)",
        "",
        *write_up_lines,
        "",
        comparison([(q, None if v is None else f"{v:.3f}", ref) for q, v, ref in compare], options.dataset),
        "",
        f"## Numbers (all {len(ctx.test)} test images)",
        "",
        table(
            ["model", "clean accuracy", *[f"FGSM ε={e:g}" for e in sweeps["standard"]["eps"][1:]]],
            [[k, f"{clean[k]:.3f}", *(f"{a:.3f}" for a in v["accuracy"][1:])] for k, v in sweeps.items()],
        ),
        "",
        f"OOD detection: the {len(ctx.test)} ID test images against "
        + ", ".join(f"the {len(d)} OOD images of `{s}`" for s, d in outliers.items())
        + ".",
        "",
        table(
            ["OOD set / model / score", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"],
            [[k.replace("|", " / "), *(f"{v:.3f}" for v in m.values())] for k, m in metrics.items()],
        ),
        "",
        look(LOOK),
        "",
        "![eps](eps_curves.png)",
        "",
        *[f"![{f}]({f})" for f in ctx.folder.figures if f.startswith(("roc", "pr", "hist"))],
    ]
    n_test, classes = len(ctx.test), len(ctx.test.info.classes)
    images = f"all {n_test} test images"
    checks = [labelled(model_learned(clean["standard"], classes, n_test), images)]
    for label, record in training.items():
        checks.append(labelled(defense_cost(clean["standard"], clean[label]), f"{label}, {images}"))
        used = next(run for run in record["runs"] if run["attack"] == record["used"])
        checks.append(labelled(catastrophic_overfitting(used["history"]),
                               f"{label}, {used['attack']}, monitor of {monitor} training images"))  # fmt: skip
    checks += [labelled(monotone_in_eps(s["eps"], s["accuracy"], n_test), f"FGSM sweep, {k}, {images}")
               for k, s in sweeps.items()]  # fmt: skip
    checks += [
        labelled(ood_auroc(m, n_test, len(outliers[k.split('|')[0]])), f"{k.replace('|', ' / ')}, {n_test} ID vs {len(outliers[k.split('|')[0]])} OOD images")
        for k, m in metrics.items()
        if k.endswith("max_logit")
    ]
    return finish(ctx, results, lines, checks)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
