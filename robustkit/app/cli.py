"""The ``robustkit`` command line (typer): parse options, call the runner or a task, print.

Heavy imports (torch, backends) happen inside the commands, so ``robustkit --help`` is fast.
Every command runs under one guard (`main`): expected errors print one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from ..core.errors import RobustkitError, RobustkitWarning
from .recipes import load_recipe, recipes

STRICT_EXIT = 3  # robustkit.app.sanity.STRICT_EXIT (not imported here: it loads torch)


def _piped() -> bool:
    """Whether help goes to a pipe or file: rich would lay it out 80 columns wide and cut long words."""
    return not sys.stdout.isatty()


class _PlainWhenPiped:
    """Help as click writes it (wrapped, nothing cut) when stdout is not a terminal; rich's panels otherwise."""

    rich_markup_mode: Any

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if not _piped():
            return super().format_help(ctx, formatter)  # type: ignore[misc]
        mode, self.rich_markup_mode = self.rich_markup_mode, None
        try:
            return super().format_help(ctx, formatter)  # type: ignore[misc]
        finally:
            self.rich_markup_mode = mode


class Command(_PlainWhenPiped, TyperCommand):
    """A command whose help stays whole when piped (``robustkit eval --help | less``)."""


class Group(_PlainWhenPiped, TyperGroup):
    """A command group whose help stays whole when piped; it lists each command's full summary."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                summary = cmd.short_help or (cmd.help or "").split("\n\n")[0]
                rows.append((name, " ".join(summary.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=Group,
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Attack, defend and OOD-score PyTorch image classifiers with one API over ART, torchattacks, foolbox and pytorch-ood.",
)
run_app = typer.Typer(
    cls=Group,
    help="Run a recipe (one per documented experiment): robustkit run NAME [OPTIONS]; robustkit run NAME --help.",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")

EXPECTED = (RobustkitError, ValueError, TypeError, FileNotFoundError, FileExistsError)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the one error guard (``--debug`` anywhere shows tracebacks)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    # Every command reports its sanity checks itself (the report, the yellow lines, --strict):
    # the library's RobustkitWarning for the same check would print it a second time.
    warnings.filterwarnings("ignore", category=RobustkitWarning)
    try:
        if args[:1] == ["run"]:
            if len(args) > 1 and not args[1].startswith("-"):
                load_recipe(args[1])  # an unknown name fails here, naming the valid ones
            add_recipe_commands()
        code = app(args=args, prog_name="robustkit", standalone_mode=False)
    except typer.Exit as err:
        raise SystemExit(err.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        _interrupted(args)
    except EXPECTED as err:
        if debug:
            raise
        message = str(err)
        typer.echo(f"error: {message} (run with --debug for a traceback)", err=True)
        raise SystemExit(2) from None
    except Exception as err:  # usage errors from typer's click: they know how to show themselves
        if hasattr(err, "show") and hasattr(err, "exit_code") and not debug:
            err.show()
            raise SystemExit(err.exit_code) from None
        raise
    if isinstance(code, int) and code:  # typer returns 130 for Ctrl-C when not standalone
        if code == 130:
            _interrupted(args)
        raise SystemExit(code)


def restart_hint(args: list[str]) -> str:
    """How to pick up the interrupted command ``args``, in its own terms: a recipe reruns (with
    --overwrite: its folder holds the figures written so far) and takes its models from the cache;
    `eval` continues with --resume; anything else reruns."""
    import shlex

    def command(extra: str, drop: str = "") -> str:
        again = [a for a in args if a != drop]
        return "`robustkit " + shlex.join(again if extra in again else [*again, extra]) + "`"

    if args[:1] == ["run"] and len(args) > 1 and not args[1].startswith("-"):
        return (
            f"rerun the recipe with {command('--overwrite')}: the models it trained are read back from the model "
            "cache, its other stages run again (a recipe keeps no partial results)"
        )
    if args[:1] == ["eval"]:
        return f"continue with {command('--resume', drop='--overwrite')}: the image attacks done so far are read back from the run folder's attack state"
    return f"rerun `robustkit {shlex.join(args)}`: trained models are read back from the model cache"


def _interrupted(args: list[str]) -> None:
    """Ctrl-C: say so, and how to pick up (`restart_hint`), and exit 130 at once. Every file was already
    closed or removed while the exception unwound (atomic writes), and exiting here keeps a late
    KeyboardInterrupt during interpreter shutdown from turning the exit status into death by signal."""
    typer.echo(f"error: interrupted; nothing half-written is kept. To pick up, {restart_hint(args)}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def recipe_main(name: str) -> None:
    """``python recipes/<name>.py [OPTIONS]``: the same as ``robustkit run <name> [OPTIONS]``."""
    main(["run", name, *sys.argv[1:]])


@app.callback()
def _root(
    ctx: typer.Context, debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks of errors")] = False
) -> None:
    """Attack, defend and OOD-score PyTorch image classifiers."""
    from .logs import configure_logging

    ctx.call_on_close(configure_logging())  # a line per stage on stderr (epochs, attacks, corruptions, σ), bars or not


# ---------------------------------------------------------------- recipes


def _option_parameter(name: str, default: Any, annotation: Any, help: str) -> inspect.Parameter:
    flag = "--" + name.replace("_", "-")
    flags = [f"{flag}/--no-{name.replace('_', '-')}"] if annotation is bool else [flag]
    option = typer.Option(default, *flags, help=help)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _recipe_parameters(module: Any) -> tuple[list[inspect.Parameter], list[inspect.Parameter]]:
    """The common options (from `RecipeOptions`) and the recipe's own (``Annotated[type, "help"]``)."""
    from .runner import RecipeOptions

    hints = typing.get_type_hints(RecipeOptions)
    common = []
    for f in dataclasses.fields(RecipeOptions):
        if f.metadata.get("cli", True):
            default = module.DEFAULT_DATASET if f.name == "dataset" else f.default
            common.append(_option_parameter(f.name, default, hints[f.name], f.metadata["help"]))
    own_hints = typing.get_type_hints(module.run, include_extras=True)
    own = []
    for p in inspect.signature(module.run).parameters.values():
        if p.name == "options":
            continue
        hint = own_hints[p.name]
        args = typing.get_args(hint)
        if typing.get_origin(hint) is not Annotated or not isinstance(args[1], str):
            raise TypeError(f"recipe option {p.name!r} needs a help text: Annotated[{hint}, 'what it does']")
        own.append(_option_parameter(p.name, p.default, args[0], args[1]))
    return common, own


def recipe_command(name: str) -> None:
    """Register recipe ``name`` as ``robustkit run <name>``, its options from its ``run`` signature."""
    module = load_recipe(name)
    common, own = _recipe_parameters(module)
    common_names = [p.name for p in common]
    strict = _option_parameter("strict", False, bool, f"exit with status {STRICT_EXIT} when a sanity check warns or fails")

    def entry(**kwargs: Any) -> None:
        from .report import load_results
        from .runner import RecipeOptions

        ctx, is_strict = kwargs.pop("ctx"), kwargs.pop("strict")
        options = RecipeOptions(**{k: kwargs.pop(k) for k in common_names})
        if options.model or options.weights:  # the user's model must fit the data before anything runs
            net = _load_model(
                options.weights, options.model, options.unsafe_pickle, options.device, dataset=options.dataset,
                threat_model=options.threat_model, model_dir=options.model_dir, num_classes=options.num_classes,
                download=options.download,
            )  # fmt: skip
            check_fits(net, ctx, options.dataset, root=options.root, download=options.download)
            del net
        path = module.run(options, **kwargs)
        typer.echo(f"report: {path / 'report.md'}")
        _report_checks(load_results(path), is_strict)

    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    entry.__signature__ = inspect.Signature([context, *common, strict, *own])  # type: ignore[attr-defined]
    run_app.command(name=name, cls=Command, help=(module.run.__doc__ or module.SUMMARY), short_help=module.SUMMARY)(entry)


def _report_checks(results: dict[str, Any], strict: bool) -> None:
    """Print warned or failed sanity checks in yellow; with ``strict``, exit with `STRICT_EXIT`."""
    from .sanity import problems

    found = problems(results)
    for check in found:
        typer.secho(f"{check['status']}: {check['name']}: {check['detail']}", fg="yellow", err=True)
    if found and strict:
        typer.secho(f"--strict: {len(found)} sanity check(s) warned or failed", fg="yellow", err=True)
        raise SystemExit(STRICT_EXIT)


def add_recipe_commands() -> None:
    """Register every recipe under ``robustkit run`` (imports the recipes, so only when needed)."""
    registered = {c.name for c in run_app.registered_commands}
    for name in recipes():
        if name not in registered:
            recipe_command(name)


@app.command("recipes", cls=Command)
def list_recipes() -> None:
    """List the recipes (one per documented experiment)."""
    _print_table("recipes", ["name", "what", "default dataset"], [[r.name, r.summary, r.default_dataset] for r in recipes().values()])


@app.command(cls=Command)
def demo(
    out: Annotated[Path, typer.Option(help="folder for the run folders, one per recipe")] = Path("runs/demo"),
    progress: Annotated[bool, typer.Option(help="show progress bars")] = False,
    verbose: Annotated[bool, typer.Option(help="log every stage (training epochs, attacks, ...) on stderr")] = False,
) -> None:
    """Run every recipe on digits (offline, about a minute once the models are cached): per recipe its time,
    sanity checks that warn or fail, report."""
    import logging
    import time

    from ..core.stages import LOGGER
    from .report import load_results
    from .runner import RecipeOptions
    from .sanity import problems

    if not verbose:  # one line per recipe; --verbose adds the stages' lines
        logging.getLogger(LOGGER).setLevel(logging.WARNING)
    typer.echo(
        f"robustkit demo: {len(recipes())} recipes on digits; a first run also trains the models they cache "
        "(minutes; later runs read them back)",
        err=True,
    )
    for name in recipes():
        start = time.time()
        options = RecipeOptions(dataset="digits", out=out / name, overwrite=True, progress=progress)
        path = load_recipe(name).run(options)
        seconds = time.time() - start
        found = problems(load_results(path))
        checks = f"{len(found)} check{'' if len(found) == 1 else 's'} warn/fail"
        line = f"{name:<26} {seconds:5.1f} s  {checks:<20} {path / 'report.md'}"
        typer.secho(line, fg="yellow" if found else None)


# ---------------------------------------------------------------- listings


def _print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


@app.command(cls=Command)
def datasets() -> None:
    """List the dataset names load_dataset understands."""
    from ..modelling.data import LOADERS, default_root

    notes = {
        "digits": "scikit-learn 8×8 digits, embedded, offline",
        "cifar10": "CIFAR-10 (python batches; --download fetches them)",
        "cifar100": "CIFAR-100; cifar100:bottle,clock keeps those classes",
        "mnist": "MNIST (idx files; --download fetches them)",
        "fashionmnist": "Fashion-MNIST (idx files; --download fetches them)",
        "fakedata": "torchvision FakeData noise images, shape of the ID set",
        "imagefolder": "imagefolder:PATH with PATH/<split>/<class>/*.png",
        "svhn": "SVHN cropped digits (test_32x32.mat; --download fetches it); an OOD set",
        "textures": "Describable Textures (DTD; --download fetches it), resized; an OOD set",
        "places365": "Places365 validation images at 256×256 (--download fetches them), resized; an OOD set",
        "tinyimagenet": "Tiny ImageNet validation images (--download fetches them), resized; an OOD set",
        "imagenet": "ILSVRC2012 val in ROOT/imagenet/val/<wnid>/, streamed, 256/224 crop; imagenet:robustbench: its 5000",
        "openood": "openood:NAME, OpenOOD v1.5's ImageNet-1K OOD lists (ssb_hard, ninco, inaturalist, textures, openimage_o)",
    }
    _print_table(f"datasets (root: {default_root()})", ["name", "what"], [[k, notes[k]] for k in LOADERS])


def _params_text(params: list[dict[str, str]]) -> str:
    return "; ".join(f"{p['name']}={p['default']}" + (f" ({p['range']})" if p["range"] else "") for p in params) or "–"


@app.command("list", cls=Command)
def list_components(
    kind: Annotated[str | None, typer.Argument(help="attacks, detectors or defenses (default: all three)")] = None,
) -> None:
    """List attacks, detectors and defenses with their parameters (robustkit list attacks)."""
    from ..registry import KINDS, catalogue

    kinds = KINDS if kind is None else (kind,)
    for k in kinds:
        rows = catalogue(k)  # an unknown kind raises a ValueError naming the valid ones
        if k == "attacks":
            headers = ["name", "backend", "norm", "targeted", "parameters"]
            body = [
                [r["name"], r["backend"] + (" (default)" if r["default"] else ""), r["norm"], r["targeted"],
                 _params_text(r["params"])]
                for r in rows
            ]  # fmt: skip
        else:
            headers = ["name", "what", "parameters"]
            body = [[r["name"], r["summary"], _params_text(r["params"])] for r in rows]
        _print_table(k, headers, body)


# ---------------------------------------------------------------- single-model commands


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["size=3", "mix=0.5"]`` → ``{"size": 3, "mix": 0.5}`` (checked later by the component)."""
    from .tasks import parse_value

    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r} must look like NAME=VALUE, e.g. --param steps=20")
        params[key.strip()] = parse_value(value)
    return params


WeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="model file: a robustkit checkpoint, a state_dict (with --model), TorchScript, or a whole saved module "
        "(with --unsafe-pickle)",
    ),
]
FactoryOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="module:factory (or file.py:factory) that builds the model, e.g. torchvision.models:resnet18; or a "
        "published model by name: robustbench:NAME, timm:NAME, torchvision:NAME (weights from the library's cache)",
    ),
]
ThreatModelOption = Annotated[
    str | None,
    typer.Option("--threat-model", help="which RobustBench zoo a robustbench:NAME model comes from: Linf (default), L2, corruptions"),
]
ModelDirOption = Annotated[
    Path | None,
    typer.Option(
        "--model-dir",
        help="RobustBench's MODEL_DIR, holding <dataset>/<threat_model>/<NAME>.pt "
        "(default: $ROBUSTKIT_CACHE/robustbench or ~/.cache/robustkit/robustbench)",
    ),
]
NumClassesOption = Annotated[
    int | None, typer.Option("--num-classes", help="give the model a new, untrained head with this many classes")
]
DownloadOption = Annotated[
    bool,
    typer.Option(help="download what is missing: the model's pretrained weights (robustbench:, timm:, torchvision:) and the data"),
]
UnsafeOption = Annotated[
    bool, typer.Option("--unsafe-pickle", help="allow a whole pickled module in --weights (loading it runs code from the file)")
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")]


def _load_model(
    weights: Path | None,
    source: str | None,
    unsafe_pickle: bool,
    device: str,
    *,
    dataset: str | None = None,
    threat_model: str | None = None,
    model_dir: Path | None = None,
    num_classes: int | None = None,
    download: bool = False,
):
    from ..modelling.loading import load_model

    return load_model(
        source, weights=weights, num_classes=num_classes, dataset=dataset, threat_model=threat_model,
        model_dir=model_dir, download=download, unsafe_pickle=unsafe_pickle, device=device,
    )  # fmt: skip


def check_fits(
    net: Any, ctx: typer.Context, dataset: str, *, param: str = "dataset", root: Path | None = None, download: bool = False
) -> str:
    """Before any work: run the user's model on one test image of ``dataset`` and raise a one-line
    ValueError (exit 2) when it fails or its number of outputs is not the data set's number of
    classes, naming the data set (and whether it is the command's default), its image shape and
    the option that chooses it. Returns the data set's name as the model needs it: an ImageNet set
    that names no preprocessing gets a named model's (``robustkit_input``), e.g. a RobustBench
    model's ``BicubicRes256Crop224``."""
    from ..core.checks import probe
    from ..modelling.data import as_image_set, load_dataset

    spec = getattr(net, "robustkit_input", None)
    dataset = spec.dataset(dataset) if spec is not None else dataset
    flag = "--" + ("id" if param == "id_data" else param.replace("_", "-"))
    data = as_image_set(load_dataset(dataset, "test", root=root, download=download, limit=1))  # ImageNet's streams
    shape, classes = "×".join(map(str, data.info.shape)), data.info.num_classes
    source = ctx.get_parameter_source(param)
    if source is not None and source.name == "DEFAULT":
        where = f"{dataset}, the data set `{ctx.command_path}` uses when {flag} is not given"
    else:
        where = f"{flag} {dataset}"
    try:
        out = probe(net, data.x)
    except Exception as err:  # the user's code may raise anything
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        problem = re.split(r"\.\s+(?=[A-Z])", first)[0].rstrip(".")  # its first sentence: the advice is ours
    else:
        if not hasattr(out, "ndim") or out.ndim != 2:
            problem = f"it returns {getattr(out, 'shape', type(out).__name__)}, not logits of shape N×classes"
        elif out.shape[1] != classes:
            problem = f"it has {out.shape[1]} outputs but {dataset} has {classes} classes"
        else:
            return dataset
    head = f", or give a named model a new head with --num-classes {classes}" if hasattr(net, "robustkit_input") else ""
    raise ValueError(
        f"your model does not fit {where} ({shape} images, {classes} classes): {problem}. "
        f"Pass {flag} with the data set your model was made for (robustkit datasets lists them){head}"
    )


@app.command(cls=Command)
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
    device: DeviceOption = "auto",
) -> None:
    """Train a model (cached) and write its checkpoint."""
    from ..core.checks import resolve_device
    from ..evaluate import accuracy
    from ..modelling.checkpoint import save_checkpoint
    from ..modelling.data import in_memory, load_dataset
    from ..modelling.models import default_arch, model_spec
    from ..modelling.train import TrainConfig, train_model

    data = in_memory(load_dataset(dataset, "train", root=root, download=download), "robustkit train")
    arch = arch or default_arch(data.info.shape)
    objective = "reconstruct" if arch == "autoencoder" else "classify"
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, objective=objective)
    spec = model_spec(arch, data.info)
    model, meta = train_model(spec, data, config, device=resolve_device(device))
    save_checkpoint(out, model, spec, meta)
    if objective == "classify":
        test = in_memory(load_dataset(dataset, "test", root=root), "robustkit train")
        typer.echo(f"test accuracy {accuracy(model, test.x, test.y):.4f}")
    typer.echo(f"checkpoint: {out}")


AdaptiveOption = Annotated[
    str,
    typer.Option(
        help="adaptive evaluation: auto (escalate only when a masking, attack or output check warns or fails), on (every "
        "rung), off (the attack's number only); docs/adaptive.md"
    ),
]
AdaptiveBudgetOption = Annotated[
    float, typer.Option(help="the adaptive rungs' cost at most, as a multiple of the attack's (image forward passes)")
]


def _check_adaptive(adaptive: str, budget: float) -> None:
    from ..evaluate.adaptive import check_budget, check_mode

    if adaptive not in ("auto", "on", "off"):
        raise ValueError(f"--adaptive {adaptive} must be auto, on or off")
    check_mode(adaptive)
    try:
        check_budget(budget)
    except ValueError:
        raise ValueError(f"--adaptive-budget {budget:g} must be a positive multiple of the attack's cost (default 5); "
                         "to skip the adaptive evaluation pass --adaptive off") from None  # fmt: skip


def _print_adaptive(record: Any) -> None:
    """The adaptive evaluation's table (one row per rung), when a rung was asked for."""
    if record is not None:
        _print_adaptive_record(record.as_dict())


def _print_adaptive_record(a: dict[str, Any]) -> None:
    """`_print_adaptive` from the results.json record."""
    if not a["rungs"] and not a["blocked"]:
        return
    if a["blocked"]:
        typer.secho(a["blocked"], fg="yellow", err=True)
        return
    first = max(a["cost"]["first"], 1)
    rows = [[r["rung"], ", ".join(r["triggered_by"]), "skipped" if r["skipped"] else str(r["broken"]),
             "" if r["skipped"] else f"{r['accuracy']:.4f}", "" if r["skipped"] else f"{r['passes'] / first:.2f}x"]
            for r in a["rungs"]]  # fmt: skip
    ok = all(c["status"] == "pass" for c in a["checks"])
    _print_table(
        f"adaptive evaluation: robust {a['first_accuracy']:.4f} first, {a['accuracy']:.4f} adaptive "
        f"(checks on the final number: {'pass' if ok else 'warn'})",
        ["rung", "triggered by", "broken", "accuracy after", "extra cost"],
        rows,
    )


@app.command(cls=Command)
def attack(
    ctx: typer.Context,
    weights: WeightsOption = None,
    model: FactoryOption = None,
    unsafe_pickle: UnsafeOption = False,
    device: DeviceOption = "auto",
    threat_model: ThreatModelOption = None,
    model_dir: ModelDirOption = None,
    num_classes: NumClassesOption = None,
    dataset: Annotated[str, typer.Option(help="dataset name")] = "digits",
    attack_name: Annotated[str, typer.Option("--attack", help="attack name (robustkit list attacks)")] = "pgd",
    backend: Annotated[str | None, typer.Option(help="backend (default: the attack's default)")] = None,
    eps: Annotated[str, typer.Option(help="budget, e.g. 8/255 or 0.1")] = "8/255",
    sweep: Annotated[str | None, typer.Option(help="comma-separated eps values for a sweep")] = None,
    steps: Annotated[int | None, typer.Option(help="iterations, for iterative attacks")] = None,
    param: Annotated[list[str] | None, typer.Option(help="any other attack parameter as NAME=VALUE (repeatable)")] = None,
    limit: Annotated[int, typer.Option(help="number of test images")] = 512,
    strict: Annotated[bool, typer.Option(help=f"exit with status {STRICT_EXIT} when a sanity check warns or fails")] = False,
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/attack"),
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    download: DownloadOption = False,
    adaptive: AdaptiveOption = "auto",
    adaptive_budget: AdaptiveBudgetOption = 5.0,
) -> None:
    """Attack a trained model on a test set: accuracy, per-eps table, image grid."""
    from .tasks import attack_run

    _check_adaptive(adaptive, adaptive_budget)
    params: dict[str, Any] = {"eps": eps, **_parse_params(param)}
    if steps is not None:
        params["steps"] = steps
    net = _load_model(
        weights, model, unsafe_pickle, device, dataset=dataset, download=download, threat_model=threat_model,
        model_dir=model_dir, num_classes=num_classes,
    )  # fmt: skip
    dataset = check_fits(net, ctx, dataset, root=root, download=download)
    label = f"`{model or weights}`" + (f" with `{weights}`" if model and weights else "")
    folder, results = attack_run(
        net, dataset, attack_name, params, out, backend=backend, sweep=sweep, limit=limit, overwrite=overwrite,
        root=root, model_label=label, progress=progress, download=download, adaptive=adaptive,
        adaptive_budget=adaptive_budget,
    )  # fmt: skip
    if "adaptive" in results:
        _print_adaptive_record(results["adaptive"])
    typer.echo(
        f"clean {results['clean_accuracy']:.4f}  robust {results['robust_accuracy']:.4f}  "
        f"({results['images']} {dataset} test images)  report: {folder.path / 'report.md'}"
    )
    _report_checks(results, strict)


@app.command(cls=Command)
def ood(
    ctx: typer.Context,
    weights: WeightsOption = None,
    model: FactoryOption = None,
    unsafe_pickle: UnsafeOption = False,
    device: DeviceOption = "auto",
    threat_model: ThreatModelOption = None,
    model_dir: ModelDirOption = None,
    num_classes: NumClassesOption = None,
    id_data: Annotated[str, typer.Option("--id", help="ID dataset")] = "digits",
    ood_data: Annotated[str, typer.Option("--ood", help="OOD dataset (fakedata: noise of the ID shape)")] = "fakedata",
    detectors: Annotated[str, typer.Option(help="comma-separated detector names")] = "max_logit,max_softmax,energy",
    limit: Annotated[int | None, typer.Option(help="images per set")] = 1000,
    strict: Annotated[bool, typer.Option(help=f"exit with status {STRICT_EXIT} when a sanity check warns or fails")] = False,
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/ood"),
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
    download: DownloadOption = False,
) -> None:
    """OOD-score ID vs OOD test images with several detectors: metrics table and figures."""
    from .tasks import OOD_HEADERS, ood_run

    names = [d.strip() for d in detectors.split(",") if d.strip()]
    net = _load_model(
        weights, model, unsafe_pickle, device, dataset=id_data, download=download, threat_model=threat_model,
        model_dir=model_dir, num_classes=num_classes,
    )  # fmt: skip
    id_data = check_fits(net, ctx, id_data, param="id_data", root=root, download=download)
    _, rows, results = ood_run(
        net, id_data, ood_data, names, out, limit=limit, overwrite=overwrite, root=root, download=download
    )
    images = results["images"]
    _print_table(f"{id_data} ({images['id']} images) vs {ood_data} ({images['ood']} images)", OOD_HEADERS, rows)
    _report_checks(results, strict)


DEFAULT_DETECTORS_TEXT = "max_softmax, max_logit, energy, gen, mahalanobis, rmd, vim, react, ash"
"""robustkit.evaluate.benchmark.DEFAULT_DETECTORS, written out: the CLI starts without importing torch
(tests/test_eval.py checks the two agree)."""

EVAL_HELP = (
    "Evaluate a model as RobustBench and OpenOOD do: clean accuracy, robust accuracy (default AutoAttack at 8/255 L∞, "
    "4/255 on ImageNet) and an OOD table against near and far sets, with sanity checks. Runs under torchrun too."
)


@app.command("eval", cls=Command, help=EVAL_HELP)
def eval_command(
    ctx: typer.Context,
    weights: WeightsOption = None,
    model: FactoryOption = None,
    unsafe_pickle: UnsafeOption = False,
    device: DeviceOption = "auto",
    threat_model: ThreatModelOption = None,
    model_dir: ModelDirOption = None,
    num_classes: NumClassesOption = None,
    dataset: Annotated[str, typer.Option(help="ID dataset (robustkit datasets), e.g. cifar10, digits, imagenet, imagenet:robustbench")] = "cifar10",
    root: Annotated[Path | None, typer.Option(help="dataset root (default: $ROBUSTKIT_DATA or ~/.cache/robustkit/data)")] = None,
    download: Annotated[
        bool,
        typer.Option(
            help="download what is missing: the model's pretrained weights (robustbench:, timm:, torchvision:) and the "
            "data sets (the ID set and the default OOD sets)"
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option(help="number of test images, and of images per OOD set (default: all)")] = None,
    seed: Annotated[int, typer.Option(help="seed for the attack, the OOD samples and the checks' sample")] = 0,
    attack_name: Annotated[
        str | None, typer.Option("--attack", help="attack defining the threat model (default: the official AutoAttack of --norm)")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="the attack's backend (default: the attack's default)")] = None,
    param: Annotated[list[str] | None, typer.Option(help="any other attack parameter as NAME=VALUE (repeatable)")] = None,
    eps: Annotated[
        str | None,
        typer.Option(help="budget (default as RobustBench: linf 8/255, 4/255 on imagenet; l2 0.5; l1 12)"),
    ] = None,
    norm: Annotated[str | None, typer.Option(help="linf, l2 or l1 (default: the attack's, linf without --attack)")] = None,
    ood_data: Annotated[
        list[str] | None,
        typer.Option("--ood", help="OOD set, optionally near:NAME or far:NAME (repeatable; default: OpenOOD's for the dataset)"),
    ] = None,
    detector: Annotated[
        list[str] | None, typer.Option(help=f"OOD detector (repeatable; default: {DEFAULT_DETECTORS_TEXT})")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default: runs/eval-<dataset>)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    resume: Annotated[
        bool, typer.Option(help="continue an interrupted eval in --out: attacked batches are read back from its state file")
    ] = False,
    strict: Annotated[bool, typer.Option(help=f"exit with status {STRICT_EXIT} when a sanity check warns or fails")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    corruptions: Annotated[
        bool,
        typer.Option(help="add accuracy under the 15 common corruptions × 5 severities (CIFAR-10-C; the official files when under --root)"),
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="images per batch in every pass (default: 256 attacking, 512 scoring; robustbench.eval.benchmark's "
            "batch_size, on which random starts depend); lower it for 224-pixel models"
        ),
    ] = None,
    adaptive: AdaptiveOption = "auto",
    adaptive_budget: AdaptiveBudgetOption = 5.0,
) -> None:
    """`EVAL_HELP`: RobustBench's and OpenOOD's numbers for one model, in one run folder."""
    from ..evaluate.benchmark import ood_sets
    from ..evaluate.benchmark import threat_model as threat_model_for
    from ..modelling.data import LOADERS, in_memory, load_dataset
    from ..registry import detector_class
    from .evaluation import ModelInfo, check_resumable, eval_run, exit_together, process_group
    from .runner import default_classifier, default_out

    # every option is checked before the model is loaded or anything is written
    if dataset.partition(":")[0] not in LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {', '.join(LOADERS)} (robustkit datasets)")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit} must be a positive number of test images")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be a positive number of images")
    _check_adaptive(adaptive, adaptive_budget)
    if model and model.startswith("robustbench:") and threat_model:  # the leaderboard's own numbers by default
        zoo = threat_model.lower()
        if zoo == "l2" and attack_name is None and norm is None:
            norm = "l2"
        corruptions = corruptions or zoo.startswith("corruptions")
    threat = threat_model_for(
        attack_name, eps=eps, norm=norm, backend=backend, seed=seed, params=_parse_params(param), dataset=dataset
    )
    ood_sets(dataset, ood_data)
    for name in detector or []:
        detector_class(name)
    out = out or default_out("eval", dataset)
    options = {
        "model": model, "weights": weights, "dataset": dataset, "root": root, "limit": limit, "seed": seed,
        "attack": attack_name, "backend": backend, "param": param, "eps": eps, "norm": norm, "ood": ood_data,
        "detector": detector, "device": device, "corruptions": corruptions, "threat_model": threat_model,
        "model_dir": model_dir, "num_classes": num_classes, "batch_size": batch_size, "adaptive": adaptive,
        "adaptive_budget": adaptive_budget,
    }  # fmt: skip
    with process_group(device) as (rank, _, device):
        lead = rank == 0  # only the first process writes and prints
        if lead:
            check_resumable(out, overwrite, resume)
        if model is None and weights is None:  # robustkit's standard classifier for the dataset, as the recipes train it
            train = in_memory(load_dataset(dataset, "train", root=root, download=download), "robustkit eval without --model")
            net, record = default_classifier(train, seed=seed, device=device, progress=progress and lead)
            about = ModelInfo(f"robustkit's `{record['arch']}` ({record['epochs']} epochs, trained once, then cached)", record)
        else:
            net = _load_model(
                weights, model, unsafe_pickle, device, dataset=dataset, download=download, threat_model=threat_model,
                model_dir=model_dir, num_classes=num_classes,
            )  # fmt: skip
            dataset = check_fits(net, ctx, dataset, root=root, download=download)
            record = {"model": model, "weights": None if weights is None else str(weights)}
            if hasattr(net, "robustkit_input"):
                record["input"] = net.robustkit_input.as_dict()
            about = ModelInfo(f"`{model or weights}`" + (f" with `{weights}`" if model and weights else ""), record)
        folder, results, bench = eval_run(
            net, about, dataset, out, attack=threat, ood=ood_data, detectors=detector, limit=limit, seed=seed, root=root,
            download=download, overwrite=overwrite, progress=progress and lead, write=lead, options=options,
            corruptions=corruptions, resume=resume, batch_size=batch_size, adaptive=adaptive,
            adaptive_budget=adaptive_budget,
        )  # fmt: skip
        failing = [c for c in results["checks"] if c["status"] != "pass"] if strict else []  # sanity.problems
        if not lead:
            if failing:  # after rank 0 has written and printed; every rank exits STRICT_EXIT
                exit_together(STRICT_EXIT)
            return
        for name, why in bench.skipped.items():
            typer.secho(f"note: {why}" if name.startswith("(") else f"note: {name} not evaluated: {why}", fg="yellow", err=True)
        means = bench.means()
        groups = [g for g in ("near", "far") if g in means]
        rows = [[d] + [means[g][d]["AUROC"] for g in groups] for d in bench.detectors]
        _print_table(
            f"OOD AUROC against {bench.n} {dataset} test images (mean per group)",
            ["detector", *(f"{bench.group_label(g)} AUROC" for g in groups)],
            rows,
        )
        _print_adaptive(bench.adaptive)
        typer.echo(
            f"clean {bench.clean_accuracy:.4f}  robust {bench.robust_accuracy:.4f}  ({bench.n} {dataset} test images, "
            f"{bench.images_per_second:.3g} images/s)  report: {folder / 'report.md'}"
        )
        _report_checks(results, False)
        if failing:
            typer.secho(f"--strict: {len(failing)} sanity check(s) warned or failed", fg="yellow", err=True)
            exit_together(STRICT_EXIT)


@app.command(cls=Command)
def defend(
    ctx: typer.Context,
    weights: WeightsOption = None,
    model: FactoryOption = None,
    unsafe_pickle: UnsafeOption = False,
    device: DeviceOption = "auto",
    threat_model: ThreatModelOption = None,
    model_dir: ModelDirOption = None,
    num_classes: NumClassesOption = None,
    defense_name: Annotated[str, typer.Option("--defense", help="defense name (robustkit list defenses)")] = "adversarial_training",
    param: Annotated[list[str] | None, typer.Option(help="a defense parameter as NAME=VALUE (repeatable)")] = None,
    dataset: Annotated[str, typer.Option(help="training dataset (training defenses)")] = "digits",
    attack_name: Annotated[str, typer.Option("--attack", help="attack for adversarial training and evaluation")] = "fgsm",
    eps: Annotated[str, typer.Option(help="budget")] = "0.1",
    epochs: Annotated[int, typer.Option(help="training epochs (training defenses)")] = 10,
    limit: Annotated[int, typer.Option(help="number of test images evaluated")] = 1000,
    out: Annotated[Path, typer.Option(help="checkpoint for a trained defense")] = Path("defended.pt"),
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
    download: DownloadOption = False,
) -> None:
    """Defend a model and print clean / attacked accuracy before and after."""
    from ..modelling.checkpoint import save_checkpoint
    from .tasks import defend_run

    net = _load_model(

        weights, model, unsafe_pickle, device, dataset=dataset, download=download, threat_model=threat_model,

        model_dir=model_dir, num_classes=num_classes,

    )  # fmt: skip
    dataset = check_fits(net, ctx, dataset, root=root, download=download)
    defended, rows = defend_run(
        net, defense_name, _parse_params(param), dataset, attack_name, eps, epochs, limit=limit, root=root,
        download=download,
    )
    _print_table(
        f"{defense_name} vs {attack_name} eps={eps} on {dataset} test images",
        ["model", "images", "clean", "attacked (adaptive)"],
        rows,
    )
    if hasattr(defended, "robustkit_spec"):
        save_checkpoint(out, defended, defended.robustkit_spec, {"defense": defense_name})
        typer.echo(f"checkpoint: {out}")


@app.command(cls=Command)
def crosscheck(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="attack name, e.g. fgsm")],
    weights: WeightsOption = None,
    model: FactoryOption = None,
    unsafe_pickle: UnsafeOption = False,
    device: DeviceOption = "auto",
    threat_model: ThreatModelOption = None,
    model_dir: ModelDirOption = None,
    num_classes: NumClassesOption = None,
    dataset: Annotated[str, typer.Option(help="dataset name")] = "digits",
    eps: Annotated[str | None, typer.Option(help="budget")] = None,
    limit: Annotated[int, typer.Option(help="number of test images")] = 128,
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
    download: DownloadOption = False,
) -> None:
    """Run one attack from every backend on the same batch and compare them."""
    from ..core.checks import resolve_device
    from ..evaluate import agreement
    from ..modelling.data import in_memory, load_dataset
    from ..modelling.models import default_arch, model_spec
    from ..modelling.train import TrainConfig, train_model
    from ..registry import attack_class

    test = in_memory(load_dataset(dataset, "test", limit=limit, root=root, download=download), "robustkit crosscheck")
    if model is None and weights is None:  # the cached default model of the data set
        train_set = in_memory(load_dataset(dataset, "train", root=root), "robustkit crosscheck (its default model)")
        spec = model_spec(default_arch(train_set.info.shape), train_set.info)
        net, _ = train_model(spec, train_set, TrainConfig(), device=resolve_device(device))
    else:
        net = _load_model(
            weights, model, unsafe_pickle, device, dataset=dataset, download=download, threat_model=threat_model,
            model_dir=model_dir, num_classes=num_classes,
        )  # fmt: skip
        dataset = check_fits(net, ctx, dataset, root=root, download=download)
    rows = agreement(name, net, test.x, test.y, **({} if eps is None else {"eps": eps}))
    sizes = ["mean_linf", "mean_l2"] if attack_class(name).norm != "l1" else ["mean_l1", "mean_l2"]  # fits 80 columns
    keys = ["backend", "accuracy", *sizes, "max_abs_diff", "prediction_agreement"]
    _print_table(f"{name}: backends on the same {len(test)} images", keys, [[r[k] for k in keys] for r in rows])


@app.command(cls=Command)
def certify(
    ctx: typer.Context,
    weights: WeightsOption = None,
    model: FactoryOption = None,
    unsafe_pickle: UnsafeOption = False,
    device: DeviceOption = "auto",
    threat_model: ThreatModelOption = None,
    model_dir: ModelDirOption = None,
    num_classes: NumClassesOption = None,
    dataset: Annotated[str, typer.Option(help="dataset name")] = "digits",
    sigma: Annotated[float, typer.Option(help="noise std σ the base classifier is smoothed with")] = 0.25,
    n0: Annotated[int, typer.Option(help="noise samples per image that select the class (paper: 100)")] = 100,
    n: Annotated[int, typer.Option(help="noise samples per image that certify (paper: 100000)")] = 1000,
    alpha: Annotated[float, typer.Option(help="failure probability of each certificate")] = 0.001,
    radii: Annotated[str, typer.Option(help="comma-separated L2 radii of the curve")] = "0,0.25,0.5,0.75,1",
    backend: Annotated[str, typer.Option(help="reference or art (ART's PyTorchRandomizedSmoothing)")] = "reference",
    attack: Annotated[bool, typer.Option(help="also attack the smoothed classifier with PGD-L2 at the same radii")] = True,
    steps: Annotated[int, typer.Option(help="PGD-L2 steps")] = 10,
    eot: Annotated[int, typer.Option(help="noise samples per PGD-L2 gradient")] = 8,
    judge: Annotated[int, typer.Option(help="noise samples of the vote that judges an adversarial image")] = 100,
    limit: Annotated[int, typer.Option(help="number of test images")] = 100,
    seed: Annotated[int, typer.Option(help="seed of the noise and the attack")] = 0,
    strict: Annotated[bool, typer.Option(help=f"exit with status {STRICT_EXIT} when a sanity check warns or fails")] = False,
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/certify"),
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    root: Annotated[Path | None, typer.Option(help="dataset root")] = None,
    download: DownloadOption = False,
) -> None:
    """Certify a model by randomised smoothing (Cohen et al. 2019): certified accuracy against the L2 radius,
    abstentions, and PGD-L2 on the smoothed classifier beside it (certified_vs_empirical)."""
    from ..defenses.smoothing import check_smoothing
    from ..evaluate.certify import certified_accuracy, certified_vs_empirical_check, empirical_accuracy
    from ..modelling.data import in_memory, load_dataset
    from . import plots, sanity
    from .report import RunFolder

    check_smoothing(sigma, n, alpha, n0)
    grid = [float(r) for r in radii.split(",") if r.strip()]
    RunFolder.check(out, overwrite)
    net = _load_model(
        weights, model, unsafe_pickle, device, dataset=dataset, download=download, threat_model=threat_model,
        model_dir=model_dir, num_classes=num_classes,
    )  # fmt: skip
    dataset = check_fits(net, ctx, dataset, root=root, download=download)
    data = in_memory(load_dataset(dataset, "test", root=root, limit=limit, download=download), "robustkit certify")
    kw = {"sigma": sigma, "radii": grid, "seed": seed}
    cert = certified_accuracy(net, data.x, data.y, n0=n0, n=n, alpha=alpha, backend=backend, **kw)
    emp = empirical_accuracy(net, data.x, data.y, steps=steps, samples=eot, n=judge, **kw) if attack else None
    checks = sanity.counted([*cert.checks, *([] if emp is None else emp.checks)])  # contract, smoothing, attack's
    if emp is not None:
        checks.append(sanity.labelled(certified_vs_empirical_check(cert, emp), f"{cert.images} images"))
    folder = RunFolder(out, overwrite=overwrite)
    empirical = None if emp is None else emp.accuracy
    plots.certified_curves({f"σ={sigma:g}": (cert.radii, cert.accuracy, empirical)}, folder.figure("certified"),
                           title="randomised smoothing", images=cert.images)  # fmt: skip
    label = f"`{model or weights}`" + (f" with `{weights}`" if model and weights else "")
    lines = [f"# Certified robustness on {cert.images} {dataset} test images, model {label}", "", *cert.markdown(emp),
             "", "![certified](certified.png)"]  # fmt: skip
    results = {"certification": cert.as_dict(), "empirical": None if emp is None else emp.as_dict(),
               "images": cert.images, "model": label, "checks": sanity.as_records(checks)}  # fmt: skip
    folder.finish(results, "\n".join(sanity.with_section(lines, checks)) + "\n")
    at = ", ".join(f"{r:g}: {a:.3f}" for r, a in zip(cert.radii, cert.accuracy, strict=True))
    typer.echo(f"certified accuracy by L2 radius ({cert.images} {dataset} test images) {at}  abstained "
               f"{cert.abstained}  base model without noise {cert.base_accuracy:.3f}  "
               f"report: {folder.path / 'report.md'}")  # fmt: skip
    _report_checks(results, strict)


if __name__ == "__main__":
    main()
