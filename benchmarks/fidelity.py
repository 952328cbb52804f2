"""Fidelity: every recipe on a real CIFAR root, beside the write-ups and a plain PyTorch baseline.

``python -m benchmarks.fidelity --root ROOT [--out DIR] [--seeds N] [--recipes a,b]`` (or
``make fidelity ROOT=...``) runs each recipe on ``cifar10`` at ROOT and writes
``DIR/fidelity.md`` and ``DIR/fidelity.json``: one row per headline number with the
write-up's number for the same comparison, robustkit's (mean ± std over the seeds) and,
where one exists, a baseline computed here with nothing but PyTorch: the same CNN trained
by a bare loop (Adam, constant learning rate, no augmentation, the profile's epochs and
batch size), its clean accuracy, its FGSM sweep and its max-logit AUROC against FakeData.

Trained models come from robustkit's cache ($ROBUSTKIT_CACHE), the plain baseline's too,
so a second run only evaluates. Test images: the recipes' default (the first 1000).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

FGSM_GRID = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
FULL_CIFAR10_TRAIN = 50_000


def plain_classifier(train: Any, epochs: int, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4,
                     seed: int = 0, cache: Path | None = None) -> torch.nn.Module:  # fmt: skip
    """The profile's CNN trained by the loop a student writes first: Adam with (coupled) weight
    decay, constant learning rate, shuffled batches, cross-entropy, no augmentation, no
    validation split. Only the architecture (with its normalisation layer) comes from robustkit."""
    from robustkit.modelling.models import build_model, model_spec

    spec = model_spec("cnn6", train.info)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "wd": weight_decay, "seed": seed,
                "data": train.fingerprint(), "spec": spec}  # fmt: skip
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    torch.manual_seed(seed)
    model = build_model(spec)
    path = None if cache is None else cache / f"plain-cnn6-{key}.pt"
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train.x), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(train.x[index]), train.y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return model


def plain_fgsm_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grid=FGSM_GRID) -> dict[float, float]:
    """Accuracy under x + ε·sign ∇ₓ CE(model(x), y), clipped to [0, 1], for every ε (ε=0: clean)."""
    hits = dict.fromkeys(grid, 0)
    for start in range(0, len(x), 256):
        xb, yb = x[start : start + 256].clone().requires_grad_(True), y[start : start + 256]
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xb), yb), xb)
        with torch.no_grad():
            for eps in grid:
                hits[eps] += int((model((xb + eps * grad.sign()).clamp(0, 1)).argmax(1) == yb).sum())
    return {eps: h / len(x) for eps, h in hits.items()}


@torch.no_grad()
def plain_max_logit_auroc(model: torch.nn.Module, id_x: torch.Tensor, ood_x: torch.Tensor) -> float:
    """AUROC of −max logit with OOD as the positive class (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    scores = torch.cat([-model(id_x).max(1).values, -model(ood_x).max(1).values]).numpy()
    labels = [0] * len(id_x) + [1] * len(ood_x)
    return float(roc_auc_score(labels, scores))


def plain_numbers(root: Path, seeds: list[int], cache: Path | None, epochs: int | None = None) -> dict[str, dict[str, float]]:
    """The plain baseline's numbers per seed, keyed like the recipes' `numbers`."""
    from robustkit.app.runner import PROFILES
    from robustkit.modelling.data import load_dataset

    train = load_dataset("cifar10", "train", root=root)
    test = load_dataset("cifar10", "test", root=root).take(PROFILES["natural"].test_limit)
    config = PROFILES["natural"].train
    out = {}
    for seed in seeds:
        model = plain_classifier(train, epochs or config.epochs, config.batch_size, seed=seed, cache=cache)
        sweep = plain_fgsm_sweep(model, test.x, test.y)
        fake = load_dataset("fakedata", "test", shape=test.info.shape, size=len(test), seed=seed)
        numbers = {f"acc@{e:g}": a for e, a in sweep.items()}
        numbers["clean"] = sweep[0.0]
        numbers["max_logit/AUROC"] = plain_max_logit_auroc(model, test.x, fake.x)
        out[str(seed)] = numbers
    return out


PLAIN_KEYS = {  # recipe -> its numbers' keys the plain baseline also measures
    "fgsm-sweep": {f"acc@{e:g}" for e in FGSM_GRID},
    "ood-baselines": {"clean", "max_logit/AUROC"},
}


def _recipe_rows(name: str, folder: Path, plain: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    from robustkit.app.recipes import load_recipe
    from robustkit.app.runner import mean_std

    module = load_recipe(name)
    results = json.loads((folder / "results.json").read_text())
    if "per_seed" in results:  # several seeds: headlines from the first run, numbers from all
        runs = [json.loads((folder / f"seed-{s}" / "results.json").read_text()) for s in results["seeds"]]
    else:
        runs = [results]
    per_seed = [module.numbers(r) for r in runs]
    src = results.get("run", {}).get("source")
    code = "not recorded" if not src else src["commit"][:7] + (" with local changes" if src["modified"] else "")
    rows = []
    for h in module.headlines(runs[0]):
        values = [n.get(h.key) for n in per_seed]
        mean, std = mean_std(values)
        baseline = None
        if h.key in PLAIN_KEYS.get(name, set()):
            baseline = mean_std([p.get(h.key) for p in plain.values()])
        rows.append({
            "recipe": name, "headline": h.label, "key": h.key, "write_up": h.reference, "write_up_note": h.note, "code": code,
            "robustkit": {"mean": mean, "std": std, "per_seed": values},
            "plain_pytorch": None if baseline is None or baseline[0] is None else {"mean": baseline[0], "std": baseline[1]},
        })  # fmt: skip
    return rows


def _cell(value: dict | None) -> str:
    from robustkit.app.runner import spread_text

    return "–" if not value or value["mean"] is None else spread_text(value["mean"], value["std"])


def _code_line(rows: list[dict[str, Any]]) -> str:
    """Which robustkit commit made each recipe's numbers."""
    per_recipe = dict.fromkeys((r["recipe"], r.get("code", "not recorded")) for r in rows)
    commits = {code for _, code in per_recipe}
    if len(commits) == 1:
        return f"robustkit commit: {commits.pop()}."
    return "robustkit commit per recipe: " + ", ".join(f"{name} {code}" for name, code in per_recipe) + "."


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The fidelity table and what it was measured on."""
    share = meta["train_images"] / FULL_CIFAR10_TRAIN
    lines = [
        f"Measured on `{meta['root']}`: {meta['train_images']} CIFAR-10 training images (about {share:.0%} of "
        f"CIFAR-10's {FULL_CIFAR10_TRAIN}) and the first {meta['test_images']} test images; seeds "
        f"{', '.join(map(str, meta['seeds']))} (mean ± sample std where a row has several runs); "
        f"the recipes' runs took {meta['recipe_minutes']:.0f} min in all, with the models the cache held. The "
        f"write-ups trained on all of CIFAR-10 for 50–70 epochs; here every model trained {meta['epochs']}. "
        f"{_code_line(rows)}",
        "",
        "| recipe | headline | write-up | robustkit | runs | plain PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = "–" if r["write_up"] is None else f"{r['write_up']:g}"
        if r["write_up_note"]:  # a number and its note, or the write-up's words alone
            ref = r["write_up_note"] if r["write_up"] is None else f"{ref} {r['write_up_note']}"
        runs = sum(v is not None for v in r["robustkit"]["per_seed"])
        lines.append(
            f"| {r['recipe']} | {r['headline']} | {ref} | {_cell(r['robustkit'])} | {runs} | {_cell(r['plain_pytorch'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding cifar-10-batches-py (and cifar-100-python)")
    parser.add_argument("--out", type=Path, default=Path("runs/fidelity"), help="where the runs and the table go")
    parser.add_argument("--seeds", type=int, default=1, help="runs per recipe (seeds 0..N-1)")
    parser.add_argument("--recipes", default=None, help="comma-separated recipes (default: all)")
    parser.add_argument("--docs", type=Path, default=None, help="also replace the table in this markdown page")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the CIFAR profile's)")
    parser.add_argument("--reuse", action="store_true",
                        help="take a recipe's finished run from OUT/<recipe> instead of running it again")  # fmt: skip
    args = parser.parse_args(argv)

    from robustkit.app.recipes import load_recipe, recipes
    from robustkit.app.runner import RecipeOptions
    from robustkit.modelling.data import load_dataset
    from robustkit.modelling.train import cache_root

    started = time.time()
    names = args.recipes.split(",") if args.recipes else list(recipes())
    seeds = list(range(args.seeds))
    plain = plain_numbers(args.root, seeds, cache_root(), args.epochs)
    ran_seeds: set[int] = set()
    recipe_seconds = 0.0  # as each run recorded it (a reused run: when it ran)
    rows = []
    for name in names:
        t0 = time.time()
        folder = args.out / name
        if not (args.reuse and (folder / "results.json").is_file()):
            options = RecipeOptions(dataset="cifar10", root=args.root, out=folder, overwrite=True,
                                    progress=False, seeds=args.seeds, epochs=args.epochs)  # fmt: skip
            folder = load_recipe(name).run(options)
        rows += _recipe_rows(name, folder, plain)
        done = json.loads((folder / "results.json").read_text())
        ran_seeds.update(done.get("seeds") or [done["options"]["seed"]])
        recipe_seconds += done.get("run", {}).get("seconds", 0.0)
        print(f"{name:<26} {time.time() - t0:7.0f} s", flush=True)
    train = load_dataset("cifar10", "train", root=args.root)
    from robustkit.app.runner import PROFILES

    test = load_dataset("cifar10", "test", root=args.root).take(PROFILES["natural"].test_limit)
    meta = {"root": str(args.root), "train_images": len(train), "test_images": len(test), "seeds": sorted(ran_seeds),
            "epochs": args.epochs or PROFILES["natural"].train.epochs,
            "minutes": (time.time() - started) / 60, "recipe_minutes": recipe_seconds / 60,
            "plain_pytorch": plain}  # fmt: skip
    table = markdown(rows, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity.md").write_text("# Fidelity\n\n" + table)
    (args.out / "fidelity.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.docs is not None:
        replace_table(args.docs, table)
    print(table)
    return {"meta": meta, "rows": rows}


BEGIN, END = "<!-- fidelity:begin -->", "<!-- fidelity:end -->"


def replace_table(page: Path, table: str) -> None:
    """Put ``table`` between the page's fidelity markers."""
    text = page.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    page.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


if __name__ == "__main__":
    main()
