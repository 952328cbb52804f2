"""Recipe 7 — attacks × defenses accuracy table (the write-up's table)."""

from pathlib import Path
from typing import Annotated

from robustkit.app.runner import RecipeOptions, comparison, finish, header, start, table
from robustkit.evaluate import accuracy, attack_batches, robust_accuracy
from robustkit.registry import attack, defense

NAME = "defense-matrix"
SUMMARY = "DeepFool and FGSM against no defense, FGSM adversarial training and median-filter squeezing."
ORDER = 7
DEFAULT_DATASET = "cifar10"
REFERENCE = {
    "none": {"deepfool": 0.074, "fgsm": 0.001, "clean": 0.885},
    "adversarial training": {"deepfool": None, "fgsm": 0.769, "clean": 0.815},
    "feature squeezing": {"deepfool": 0.775, "fgsm": 0.453, "clean": 0.801},
}


def run(
    options: RecipeOptions,
    eps: Annotated[str, "FGSM budget, for the attack and for adversarial training"] = "0.1",
    squeezer: Annotated[str, "squeezer of the squeezing defense, e.g. median_filter:2 or bit_depth:4"] = "median_filter:2",
    attack_limit: Annotated[int, "number of test images attacked"] = 500,
    deepfool_steps: Annotated[int, "DeepFool iterations at most"] = 20,
) -> Path:
    """The write-up's table: adversarial examples for the squeezing row are made on the clean model."""
    ctx = start(NAME, options)
    model = ctx.classifier()
    fgsm = attack("fgsm", eps=eps)
    trained = defense(  # the same monitor as adversarial-training-ood, so both share one cached model
        "adversarial_training",
        attack=fgsm,
        train_config=ctx.config,
        monitor=ctx.test.take(256),
        cache=options.cache,
        progress=options.progress,
    ).apply(model, ctx.train)
    squeezed = defense(
        "squeezed_training", squeezer=squeezer, train_config=ctx.config, cache=options.cache, progress=options.progress
    ).apply(model, ctx.train)
    x, y = ctx.test.x[:attack_limit], ctx.test.y[:attack_limit]
    # ART's DeepFool recomputes every class gradient for the whole batch until the last image flips;
    # 20 iterations gave the same accuracy as 50 on digits in 40% of the time
    attacks = {"deepfool": attack("deepfool", steps=deepfool_steps), "fgsm": fgsm}
    on_clean_model = {name: attack_batches(atk, model, x, y) for name, atk in attacks.items()}
    matrix = {
        "none": {**{n: accuracy(model, a, y) for n, a in on_clean_model.items()}, "clean": accuracy(model, x, y)},
        "adversarial training": {
            **{n: robust_accuracy(atk, trained, x, y)["accuracy"] for n, atk in attacks.items()},
            "clean": accuracy(trained, x, y),
        },
        "feature squeezing": {
            **{n: accuracy(squeezed, a, y) for n, a in on_clean_model.items()},
            "clean": accuracy(squeezed, x, y),
        },
        "feature squeezing (adaptive, BPDA)": {
            **{n: robust_accuracy(atk, squeezed, x, y)["accuracy"] for n, atk in attacks.items()},
            "clean": accuracy(squeezed, x, y),
        },
    }
    pct = lambda v: None if v is None else round(100 * v, 1)  # noqa: E731
    compare = [
        (f"{d} / {a}", pct(matrix[d][a]), pct(REFERENCE[d][a]))
        for d in REFERENCE
        for a in ("deepfool", "fgsm", "clean")
    ]
    lines = header(ctx, "Attacks × defenses", SUMMARY) + [
        f"FGSM ε={fgsm.eps:g}; DeepFool (ART, at most {deepfool_steps} iterations); squeezer `{squeezer}`; {len(x)} test images.",
        "",
        table(
            ["defense \\ attack (%)", "DeepFool", "FGSM", "none"],
            [[d, *[pct(v[a]) for a in ("deepfool", "fgsm", "clean")]] for d, v in matrix.items()],
        ),
        "",
        "## Against the write-up (%)",
        "",
        comparison(compare, options.dataset),
        "",
        "Finding: the squeezing row follows the write-up (examples made on the undefended model); the adaptive row "
        f"attacks through the filter and shows FGSM accuracy {pct(matrix['feature squeezing (adaptive, BPDA)']['fgsm'])}% "
        f"instead of {pct(matrix['feature squeezing']['fgsm'])}%.",
    ]
    return finish(ctx, {"eps": fgsm.eps, "squeezer": squeezer, "accuracy": matrix}, lines)


if __name__ == "__main__":
    from robustkit.app.cli import recipe_main

    recipe_main(NAME)
