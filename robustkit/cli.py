"""The ``robustkit`` command line (typer). Heavy imports happen inside the commands."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from .errors import RobustkitError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Attack, defend and OOD-score PyTorch image classifiers with one API over ART, torchattacks, foolbox and pytorch-ood.",
)
list_app = typer.Typer(help="List what robustkit offers.", no_args_is_help=True)
app.add_typer(list_app, name="list")

RECIPES = (
    "ood-baselines",
    "fgsm-budget",
    "fgsm-sweep",
    "adversarial-training-ood",
    "squeeze-distill",
    "ae-purification",
    "defense-matrix",
)
EXPECTED = (RobustkitError, ValueError, TypeError, FileNotFoundError, FileExistsError, KeyboardInterrupt)


def run_guarded(application: typer.Typer, argv: list[str]) -> None:
    """Run a typer app; expected errors print one line and exit 2 (``--debug``: full traceback)."""
    if "--debug" in argv:
        os.environ["ROBUSTKIT_DEBUG"] = "1"  # recipes run through a nested run_guarded
        argv = [a for a in argv if a != "--debug"]
    debug = os.environ.get("ROBUSTKIT_DEBUG") == "1"
    try:
        code = application(args=argv, prog_name="robustkit", standalone_mode=False)
    except EXPECTED as err:
        if debug:
            raise
        message = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err).strip("'\"")
        typer.echo(f"error: {message} (run with --debug for a traceback)", err=True)
        raise SystemExit(130 if isinstance(err, KeyboardInterrupt) else 2) from None
    except SystemExit:
        raise
    except Exception as err:  # usage errors from typer's (vendored) click, and anything unexpected
        names = {cls.__name__ for cls in type(err).__mro__}
        if "ClickException" in names:
            err.show()  # type: ignore[attr-defined]
            raise SystemExit(err.exit_code) from None  # type: ignore[attr-defined]
        if "Exit" in names:
            raise SystemExit(getattr(err, "exit_code", 0)) from None
        if "Abort" in names:
            raise SystemExit(1) from None
        raise
    if isinstance(code, int) and code:  # typer turns Ctrl-C into a returned 130 when not standalone
        if code == 130:
            typer.echo("error: interrupted; nothing half-written is kept, rerun to resume from the cache", err=True)
        raise SystemExit(code)


def main() -> None:
    """Console entry point."""
    run_guarded(app, sys.argv[1:])


def _recipe_dir() -> Path:
    for candidate in (Path(__file__).resolve().parents[1] / "recipes", Path(__file__).resolve().parent / "_recipes"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("robustkit's recipes folder is missing from this installation")


def load_recipe(name: str) -> ModuleType:
    """Import recipe ``name`` (e.g. ``fgsm-sweep``) from the recipes folder."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid names: {', '.join(RECIPES)}")
    path = _recipe_dir() / f"{name.replace('-', '_')}.py"
    spec = importlib.util.spec_from_file_location(f"robustkit_recipe_{name.replace('-', '_')}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


@app.command()
def datasets() -> None:
    """List the dataset names load_dataset understands."""
    from .data import LOADERS, default_root

    notes = {
        "digits": "scikit-learn 8×8 digits, embedded, offline",
        "cifar10": "CIFAR-10 (python batches; --download fetches them)",
        "cifar100": "CIFAR-100; cifar100:bottle,clock keeps those classes",
        "mnist": "MNIST (idx files; --download fetches them)",
        "fakedata": "torchvision FakeData noise images, shape of the ID set",
        "imagefolder": "imagefolder:PATH with PATH/<split>/<class>/*.png",
    }
    _print_table(f"datasets (root: {default_root()})", ["name", "what"], [[k, notes[k]] for k in LOADERS])


@list_app.command("attacks")
def list_attacks() -> None:
    """Every (attack, backend) with its norm, targeted support and parameters."""
    from .registry import attack_table

    rows = [
        [r["name"], r["backend"] + (" (default)" if r["default"] else ""), r["norm"], r["targeted"], r["params"]]
        for r in attack_table()
    ]
    _print_table("attacks", ["name", "backend", "norm", "targeted", "parameters"], rows)


@list_app.command("detectors")
def list_detectors() -> None:
    """Every detector (higher score = more suspicious)."""
    from .registry import DETECTORS, load

    _print_table(
        "detectors", ["name", "what"], [[n, (load(p).__doc__ or "").splitlines()[0]] for n, p in DETECTORS.items()]
    )


@list_app.command("defenses")
def list_defenses() -> None:
    """Every defense."""
    from .registry import DEFENSES, load

    _print_table(
        "defenses", ["name", "what"], [[n, (load(p).__doc__ or "").splitlines()[0]] for n, p in DEFENSES.items()]
    )


@app.command()
def recipes() -> None:
    """List the recipes (one per documented experiment)."""
    _print_table("recipes", ["name", "what"], [[n, load_recipe(n).SUMMARY] for n in RECIPES])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def run(ctx: typer.Context, name: Annotated[str, typer.Argument(help="recipe name (robustkit recipes)")]) -> None:
    """Run a recipe: robustkit run fgsm-sweep --dataset digits (add --help for its options)."""
    load_recipe(name).main(list(ctx.args))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the seven run folders")] = Path("runs/demo"),
    progress: Annotated[bool, typer.Option(help="show progress bars")] = False,
) -> None:
    """Run all seven recipes on the embedded digits data (offline, about a minute)."""
    import time

    from .recipe import RecipeOptions

    for name in RECIPES:
        start = time.time()
        options = RecipeOptions(dataset="digits", out=out / name, overwrite=True, progress=progress)
        path = load_recipe(name).run(options)
        typer.echo(f"{name:<26} {time.time() - start:5.1f} s  {path / 'report.md'}")


def _load_model(path: Path):
    from .checkpoint import load_checkpoint

    return load_checkpoint(path)[0]


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="dataset name")] = "digits",
    arch: Annotated[str | None, typer.Option(help="small_cnn, cnn6, resnet18, autoencoder")] = None,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 10,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 64,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    out: Annotated[Path, typer.Option(help="checkpoint file to write")] = Path("model.pt"),
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
    download: Annotated[bool, typer.Option(help="download the dataset if missing")] = False,
) -> None:
    """Train a model (cached) and write its checkpoint."""
    from .checkpoint import save_checkpoint
    from .data import load_dataset
    from .evaluate import accuracy
    from .models import default_arch, model_spec
    from .train import TrainConfig, train_model

    data = load_dataset(dataset, "train", root=root, download=download)
    arch = arch or default_arch(data.info.shape)
    objective = "reconstruct" if arch == "autoencoder" else "classify"
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, objective=objective)
    spec = model_spec(arch, data.info)
    model, meta = train_model(spec, data, config)
    save_checkpoint(out, model, spec, meta)
    if objective == "classify":
        test = load_dataset(dataset, "test", root=root)
        typer.echo(f"test accuracy {accuracy(model, test.x, test.y):.4f}")
    typer.echo(f"checkpoint: {out}")


@app.command()
def attack(
    model: Annotated[Path, typer.Option(help="robustkit checkpoint")],
    dataset: Annotated[str, typer.Option(help="dataset name")] = "digits",
    attack_name: Annotated[str, typer.Option("--attack", help="attack name (robustkit list attacks)")] = "pgd",
    backend: Annotated[str | None, typer.Option(help="backend (default: the attack's default)")] = None,
    eps: Annotated[str, typer.Option(help="budget, e.g. 8/255 or 0.1")] = "8/255",
    sweep: Annotated[str | None, typer.Option(help="comma-separated eps values for a sweep")] = None,
    steps: Annotated[int | None, typer.Option(help="iterations, for iterative attacks")] = None,
    limit: Annotated[int, typer.Option(help="number of test images")] = 512,
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/attack"),
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
) -> None:
    """Attack a trained model on a test set: accuracy, per-eps table, image grid."""
    from . import plots
    from .data import load_dataset
    from .evaluate import accuracy, attack_batches, eps_sweep, predict
    from .registry import attack as make_attack
    from .report import RunFolder, table

    folder = RunFolder(out, overwrite=overwrite)
    net = _load_model(model)
    data = load_dataset(dataset, "test", root=root, limit=limit)
    params: dict[str, Any] = {"eps": eps}
    if steps is not None:
        params["steps"] = steps
    atk = make_attack(attack_name, backend, **params)
    adv = attack_batches(atk, net, data.x, data.y)
    clean, robust = accuracy(net, data.x, data.y), accuracy(net, adv, data.y)
    results: dict[str, Any] = {"attack": atk.describe(), "clean_accuracy": clean, "robust_accuracy": robust}
    lines = [f"# {atk!r} on {dataset}", "", table(["clean accuracy", "robust accuracy"], [[clean, robust]])]
    if sweep:
        result = eps_sweep(atk, net, data.x, data.y, sweep.split(","))
        results["sweep"] = result.as_dict()
        plots.eps_curves({atk.name: (result.eps, result.accuracy)}, folder.figure("eps_curve"))
        lines += [
            "",
            table(["eps", "accuracy"], [list(r) for r in zip(result.eps, result.accuracy, strict=True)]),
            "",
            "![eps](eps_curve.png)",
        ]
    names = data.info.classes
    n = min(8, len(data))
    rows = [
        ("clean", data.x[:n].numpy(), [names[int(p)] for p in predict(net, data.x[:n])]),
        ("adversarial", adv[:n].numpy(), [names[int(p)] for p in predict(net, adv[:n])]),
    ]
    plots.image_grid(rows, folder.figure("examples"), title=repr(atk))
    lines += ["", "![examples](examples.png)"]
    folder.finish(results, "\n".join(lines) + "\n")
    typer.echo(f"clean {clean:.4f}  robust {robust:.4f}  report: {folder.path / 'report.md'}")


@app.command()
def ood(
    model: Annotated[Path, typer.Option(help="robustkit checkpoint")],
    id_data: Annotated[str, typer.Option("--id", help="ID dataset")] = "digits",
    ood_data: Annotated[str, typer.Option("--ood", help="OOD dataset (fakedata: noise of the ID shape)")] = "fakedata",
    detectors: Annotated[str, typer.Option(help="comma-separated detector names")] = "max_logit,max_softmax,energy",
    limit: Annotated[int | None, typer.Option(help="images per set")] = 1000,
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/ood"),
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
) -> None:
    """OOD-score ID vs OOD test images with several detectors: metrics table and figures."""
    from . import plots
    from .data import load_dataset
    from .evaluate import ood as evaluate_ood
    from .registry import detector
    from .report import RunFolder, table

    folder = RunFolder(out, overwrite=overwrite)
    net = _load_model(model)
    train_set = load_dataset(id_data, "train", root=root)
    id_set = load_dataset(id_data, "test", root=root, limit=limit)
    kwargs = {"shape": id_set.info.shape, "size": len(id_set)} if ood_data == "fakedata" else {}
    ood_set = load_dataset(ood_data, "test", root=root, limit=limit, **kwargs)
    scores, results, rows = {}, {}, []
    for name in [d.strip() for d in detectors.split(",") if d.strip()]:
        result = evaluate_ood(detector(name).fit(net, train_set), id_set.x, ood_set.x)
        scores[name] = (result.id_scores, result.ood_scores)
        results[name] = result.metrics
        rows.append([name, *result.metrics.values()])
        plots.score_histogram(result.id_scores, result.ood_scores, folder.figure(f"hist_{name}"), title=name)
    plots.roc_pr(scores, folder.figure("roc"), folder.figure("pr"))
    md = table(["detector", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"], rows)
    figures = " ".join(f"![{f}]({f})" for f in folder.figures)
    folder.finish(
        {"id": id_data, "ood": ood_data, "metrics": results}, f"# OOD: {id_data} vs {ood_data}\n\n{md}\n\n{figures}\n"
    )
    _print_table(f"{id_data} vs {ood_data}", ["detector", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"], rows)


@app.command()
def defend(
    model: Annotated[Path, typer.Option(help="robustkit checkpoint of the model to defend")],
    defense_name: Annotated[
        str, typer.Option("--defense", help="defense name (robustkit list defenses)")
    ] = "adversarial_training",
    dataset: Annotated[str, typer.Option(help="training dataset (training defenses)")] = "digits",
    attack_name: Annotated[
        str, typer.Option("--attack", help="attack for adversarial training and evaluation")
    ] = "fgsm",
    eps: Annotated[str, typer.Option(help="budget")] = "0.1",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 10,
    out: Annotated[Path, typer.Option(help="checkpoint for a trained defense")] = Path("defended.pt"),
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
) -> None:
    """Defend a model and print clean / attacked accuracy before and after."""
    from .checkpoint import save_checkpoint
    from .data import load_dataset
    from .evaluate import accuracy, robust_accuracy
    from .registry import attack as make_attack
    from .registry import defense
    from .train import TrainConfig

    net = _load_model(model)
    atk = make_attack(attack_name, eps=eps)
    train_set = load_dataset(dataset, "train", root=root)
    test = load_dataset(dataset, "test", root=root, limit=1000)
    config = TrainConfig(epochs=epochs)
    params: dict[str, Any] = {}
    if defense_name == "adversarial_training":
        params = {"attack": atk, "train_config": config}
    elif defense_name in ("distillation", "squeezed_training"):
        params = {"train_config": config}
    defended = defense(defense_name, **params).apply(net, train_set)
    rows = []
    for label, m in (("undefended", net), ("defended", defended)):
        rows.append([label, accuracy(m, test.x, test.y), robust_accuracy(atk, m, test.x, test.y)["accuracy"]])
    _print_table(f"{defense_name} vs {atk!r}", ["model", "clean", "attacked (adaptive)"], rows)
    if hasattr(defended, "robustkit_spec"):
        save_checkpoint(out, defended, defended.robustkit_spec, {"defense": defense_name})
        typer.echo(f"checkpoint: {out}")


@app.command()
def crosscheck(
    name: Annotated[str, typer.Argument(help="attack name, e.g. fgsm")],
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: the cached digits model)")] = None,
    dataset: Annotated[str, typer.Option(help="dataset name")] = "digits",
    eps: Annotated[str | None, typer.Option(help="budget")] = None,
    limit: Annotated[int, typer.Option(help="number of test images")] = 128,
) -> None:
    """Run one attack from every backend on the same batch and compare them."""
    from .data import load_dataset
    from .evaluate import agreement
    from .models import default_arch, model_spec
    from .train import TrainConfig, train_model

    test = load_dataset(dataset, "test", limit=limit)
    if model is None:
        train_set = load_dataset(dataset, "train")
        net, _ = train_model(model_spec(default_arch(train_set.info.shape), train_set.info), train_set, TrainConfig())
    else:
        net = _load_model(model)
    params = {} if eps is None else {"eps": eps}
    rows = agreement(name, net, test.x, test.y, **params)
    keys = ["backend", "accuracy", "mean_linf", "mean_l2", "max_abs_diff", "prediction_agreement"]
    _print_table(f"{name}: backends on the same {len(test)} images", keys, [[r[k] for k in keys] for r in rows])


if __name__ == "__main__":
    main()
