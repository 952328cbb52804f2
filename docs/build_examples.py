"""Run every recipe on digits and turn the runs into the docs' worked examples.

Writes ``docs/examples/<recipe>.md`` (+ its figures in ``docs/examples/<recipe>/``),
``docs/generated/agreement.md``, ``docs/generated/benchmarks.md``, ``docs/generated/eval-report.md``
(a ``robustkit eval`` run on digits, in ``docs/examples/eval/``), the output of the code on
docs/own-model.md and docs/certify.md, the digits numbers docs/corruptions.md quotes, and ``docs/cli.md``.
Every number the docs quote from a run comes from here (or names the run it came from).
``--quick`` (1 epoch, 60 test images) is what the test suite uses to check the strict build.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def example_page(name: str, module, folder: Path) -> str:
    """The recipe's introduction, how to run it, then its report with image paths rewritten."""
    report = (folder / "report.md").read_text()
    title, _, body = report.partition("\n")
    body = re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", rf"![\1]({name}/\2)", body)
    options = [p for p in inspect.signature(module.run).parameters.values() if p.name != "options"]
    own = ", ".join(f"`--{p.name.replace('_', '-')}` (default `{p.default}`)" for p in options) or "none"
    results = json.loads((folder / "results.json").read_text())
    return "\n".join(
        [
            f"{title} — `{name}`",
            "",
            f"> {module.__doc__.strip()}",
            "",
            "```bash",
            f"uv run robustkit run {name} --dataset digits    # this page's run, offline",
            f"uv run robustkit run {name} --download          # the write-up's dataset",
            "```",
            "",
            f"Its own options: {own}. Common ones: `--dataset --epochs --device --seed --out --root --download --limit`.",
            f"This run took {results['run']['seconds']:.1f} s; its numbers are in `results.json` beside the figures.",
            "",
            "## The run's report",
            body.replace("\n# ", "\n## "),
        ]
    )


def agreement_table(quick: bool) -> str:
    import robustkit as rk
    from robustkit.app.runner import PROFILES
    from robustkit.modelling.models import model_spec

    train, test = rk.load_dataset("digits", "train"), rk.load_dataset("digits", "test", limit=32 if quick else 200)
    config = PROFILES["small"].train
    model, _ = rk.train_model(model_spec("small_cnn", train.info), train, config, progress=False)
    rows = [
        "| attack | backend | adversarial accuracy | mean L2 | max \\|Δx\\| vs first | same predictions as first |",
        "|---|---|---|---|---|---|",
    ]
    # torchattacks' DeepFool works one image at a time (about 3 s per image that it fails to flip on
    # digits), so the quick build, which only checks that the page builds, caps its steps
    deepfool = {"steps": 5} if quick else {}
    for name, params in (("fgsm", {"eps": 0.1}), ("pgd", {"eps": 0.1}), ("pgd_l2", {"eps": 1.0}), ("deepfool", deepfool)):
        for r in rk.evaluate.agreement(name, model, test.x, test.y, **params):
            rows.append(
                f"| {name} | {r['backend']} | {r['accuracy']:.3f} | {r['mean_l2']:.3f} | {r['max_abs_diff']:.2g} | {r['prediction_agreement']:.3f} |"
            )
    return "\n".join(rows) + f"\n\n{len(test)} digits test images, {params or 'default parameters'} for DeepFool.\n"


def benchmarks_table() -> str:
    path = ROOT / "benchmarks" / "results.json"
    if not path.exists():
        return "No benchmark results yet: run `make bench`.\n"
    data = json.loads(path.read_text())
    rows = ["| measurement | value | goal | met |", "|---|---|---|---|"]
    for r in data["rows"]:
        met = "–" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        rows.append(f"| {r['what'].replace('|', '/')} | {r['ratio']:.3f} | {r['goal']} | {met} |")
    meta = data["meta"]
    return "\n".join(rows) + f"\n\nBatch {meta['batch']}, {meta['threads']} threads, torch {meta['torch']}.\n"


def eval_example(docs_dir: Path, quick: bool) -> str:
    """Run ``robustkit eval`` on digits (robustkit's cached classifier, PGD at the digits budget 0.1)
    and return its report for the Evaluate page, headings one level down and figures relinked."""
    from robustkit.app.cli import main

    folder = docs_dir / "examples" / "eval"
    args = ["--dataset", "digits", "--attack", "pgd", "--eps", "0.1"] + (["--limit", "60", "--param", "steps=5"] if quick else [])
    log = io.StringIO()
    with contextlib.redirect_stderr(log):  # the lines it logs, for the Evaluate page's "While it runs"
        main(["eval", *args, "--no-progress", "--out", str(folder), "--overwrite"])
    lines = [line for line in log.getvalue().splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]
    (docs_dir / "generated" / "eval-log.md").write_text("```text\n" + "\n".join(lines) + "\n```\n")
    _, _, body = (folder / "report.md").read_text().partition("\n")
    body = re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", r"![\1](examples/eval/\2)", body)
    body = body.replace("\n### ", "\n#### ").replace("\n## ", "\n### ")
    return f"```bash\nrobustkit eval {' '.join(args)}\n```\n{body}"


def _paper_link(paper: str) -> str:
    """``Authors Year, Title, URL`` as a Markdown link on the title."""
    head, _, url = paper.rpartition(", ")
    return f"[{head}]({url})" if url.startswith("http") else paper


def component_reference() -> str:
    """One table per kind from the registry's declarations: names, backends, parameters, papers."""
    from robustkit.registry import catalogue

    intro = {
        "attacks": "Construct with `robustkit.attack(name, backend=None, **params)`; the first backend listed is the default.",
        "detectors": "Construct with `robustkit.detector(name, **params)`, then `.fit(model, train_data).score(x)`; "
        "higher scores mean more likely OOD (or adversarial).",
        "defenses": "Construct with `robustkit.defense(name, **params)`, then `.apply(model, train_data)`.",
    }
    parts = [
        "# Reference",
        "",
        "Generated from the registry and the parameter declarations (`robustkit list` prints the same).",
        "Every parameter is checked when the object is built.",
        "",
    ]
    for kind in ("attacks", "detectors", "defenses"):
        parts += [f"## {kind.capitalize()}", "", intro[kind], ""]
        for row in catalogue(kind):
            title = f"### `{row['name']}`" + (f" — {row['backend']}" if "backend" in row else "")
            parts += [title, "", row["summary"], ""]
            if "backend" in row:
                parts += [
                    f"Norm: {row['norm']}; targeted mode: {'yes' if row['targeted'] else 'no'}"
                    + ("; default backend." if row["default"] else "."),
                    "",
                ]
            parts += [f"Paper: {'; '.join(_paper_link(p) for p in row['paper'].split('; '))}", ""]
            if row["params"]:
                parts += ["| parameter | type | default | accepted | meaning |", "|---|---|---|---|---|"]
                parts += [
                    f"| `{p['name']}` | {p['type'].replace(' | ', ' or ')} | `{p['default']}` | {p['range'] or '–'} | {p['help']} |"
                    for p in row["params"]
                ]
            else:
                parts.append("No parameters.")
            parts.append("")
    return "\n".join(parts + corruption_reference() + certification_reference())


def corruption_reference() -> list[str]:
    """The common corruptions with their severity constants (`robustkit.modelling.corruptions`)."""
    from robustkit.core.papers import HENDRYCKS_2019
    from robustkit.modelling.corruptions import CORRUPTIONS, SETS

    parts = [
        "## Corruptions",
        "",
        "`robustkit.evaluate.corruption_accuracy(model, data, corruptions=None, severities=None, seed=0, "
        "reference=None, files=None, constants='cifar10-c')` and `robustkit eval --corruptions` "
        "([worked example](corruptions.md)). The 15 corruptions of CIFAR-10-C and ImageNet-C, with the constants "
        "of the authors' scripts per severity 1 … 5 (elastic_transform's in pixels at the script's image side, "
        "scaled with the image side; zoom_blur's as np.arange's start, stop, step).",
        "",
        f"Paper: {_paper_link(HENDRYCKS_2019)}",
        "",
    ]
    for key, spec in SETS.items():
        parts += [
            f"### {spec.name} (`constants='{key}'`, {spec.script}, {spec.side}×{spec.side} images)",
            "",
            "| corruption | severity 1 | severity 2 | severity 3 | severity 4 | severity 5 |",
            "|---|---|---|---|---|---|",
        ]
        for name in CORRUPTIONS:
            parts.append(f"| `{name}` | " + " | ".join(f"`{_short(c)}`" for c in spec.constants[name]) + " |")
        parts.append("")
    return parts


def _short(value: object) -> object:
    """A constant as the table shows it: floats to 6 significant digits (244 * 0.7 is 170.8, not 170.79999999999998)."""
    if isinstance(value, tuple):
        return tuple(_short(v) for v in value)
    return float(f"{value:.6g}") if isinstance(value, float) else value


def certification_reference() -> list[str]:
    """Randomised smoothing's certification parameters, with the paper's values (`robustkit.evaluate.certify.PARAMETERS`)."""
    from robustkit.core.papers import COHEN_2019
    from robustkit.evaluate.certify import PARAMETERS

    parts = [
        "## Certification",
        "",
        "`robustkit.evaluate.certified_accuracy(model, data, sigma=..., n0=100, n=10_000, alpha=0.001, radii=None, "
        "seed=0, backend='reference')` and `robustkit certify` ([worked example](certify.md)): randomised "
        "smoothing's `CERTIFY` (Cohen et al. 2019), its parameters with the values the paper uses (robustkit's "
        "default n is 10 000, a tenth of the paper's, for a CPU).",
        "",
        f"Paper: {_paper_link(COHEN_2019)}",
        "",
        "| parameter | the paper's value | meaning |",
        "|---|---|---|",
    ]
    parts += [f"| `{name}` | {value} | {meaning} |" for name, value, meaning in PARAMETERS]
    return [*parts, ""]


def run_tutorial(page: Path, namespace: dict | None = None) -> str:
    """Run the ```python blocks of a docs page in one namespace; return what they printed.

    The tutorial's code is executed at every docs build, so it cannot rot: any error fails
    the build (and the docs test). ``namespace`` receives the blocks' variables.
    """
    import contextlib
    import io
    import tempfile

    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    namespace = {} if namespace is None else namespace
    namespace["__name__"] = "tutorial"
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(out), contextlib.chdir(tmp):
        for i, code in enumerate(blocks, 1):
            exec(compile(code, f"{page.name} block {i}", "exec"), namespace)
    return out.getvalue()


def certify_example(page: Path, quick: bool) -> tuple[str, str]:
    """Run the worked example of docs/certify.md; return what it printed and the paragraph that reads its
    numbers (the quick build, which only checks that the pages build, does not run it: a minute of CPU)."""
    if quick:
        note = "(The quick docs build does not run this example; `make docs` does.)\n"
        return note, note
    namespace: dict = {}
    output = run_tutorial(page, namespace)
    cert, emp = namespace["cert"], namespace["emp"]
    i = cert.radii.index(0.5)
    capped = [(r, c, e) for r, c, e in zip(cert.radii, cert.accuracy, emp.accuracy, strict=True) if r > cert.max_radius]
    why = (
        f", which is why the certified curve is {capped[0][1]:.0%} at {capped[0][0]:g} while PGD-L2 still leaves "
        f"{capped[0][2]:.0%}" if capped else ""
    )
    reading = (
        f"Read it as: at radius 0.5, between {cert.accuracy[i]:.0%} (certified) and {emp.accuracy[i]:.0%} (PGD-L2 "
        f"found no adversarial example for the rest) of the {cert.images} images are robust; {cert.abstained} images "
        f"abstained; and with n = {cert.n} samples nothing above radius {cert.max_radius:.3f} can be certified{why}. "
        "The gap is what neither bound settles: a stronger attack lowers the upper curve, a larger n (and a better "
        "base classifier) raises the lower one.\n"
    )
    return "```text\n" + output + "```\n", reading


def corruption_summary(folder: Path) -> str:
    """The digits numbers docs/corruptions.md quotes, from the corruption-robustness run of this build."""
    from robustkit.app.recipes import load_recipe

    recipe = load_recipe("corruption-robustness")
    results = json.loads((folder / "results.json").read_text())
    verdicts = recipe.verdicts(recipe.numbers(results))
    by = {w: [(c.replace("_", " "), d) for c, (v, d, _) in verdicts.items() if v == w] for w in ("helps", "hurts")}
    same = [c for c, (v, _, _) in verdicts.items() if v == "within noise"]
    parts = []
    for word, found in (("helped with", by["helps"]), ("hurt with", by["hurts"])):
        if found:
            deltas = [d for _, d in found]
            parts.append(f"{word} {', '.join(c for c, _ in found)} ({min(deltas):+.2f} to {max(deltas):+.2f})")
    parts.append(f"left {'the other ' if parts else ''}{len(same)} within sampling noise")
    undefined = results["undefined"]["relative_ce"]
    over = len(results["relative_ce"]) - len(undefined)
    why = (f": the standard model lost no accuracy to {', '.join(c.replace('_', ' ') for c in undefined)}, so its "
           "relative CE is undefined") if undefined else ""  # fmt: skip
    mce, rel = results["mce"], results["relative_mce"]
    return (
        f"On digits ({results['images']} test images; adversarial training with {results['training']['used']} at "
        f"ε = {results['train_eps']:g}), in the run behind [its worked example](examples/corruption-robustness.md), "
        f"adversarial training {', '.join(parts[:-1]) + ' and ' if len(parts) > 1 else ''}{parts[-1]}; mCE {'–' if mce is None else f'{mce:.2f}'}, relative mCE "
        f"{'–' if rel is None else f'{rel:.2f}'} (over {over} corruptions{why}).\n"
    )


def provenance() -> str:
    """Which commit and data produced the generated numbers."""
    import subprocess

    import robustkit

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    rev = (commit.stdout.strip() or "unknown") + (" with uncommitted changes" if dirty else "")
    return (
        f"The numbers on these pages were produced by robustkit {robustkit.__version__} at commit `{rev}`, "
        "on the embedded scikit-learn digits data (8×8 images, offline), by `make docs`.\n"
    )


def cli_reference() -> str:
    from typer.testing import CliRunner

    from robustkit.app.cli import add_recipe_commands, app
    from robustkit.app.recipes import recipes

    add_recipe_commands()
    runner = CliRunner()
    parts = ["# Command line", "", "Every command and its options, as `robustkit COMMAND --help` prints them.", ""]
    for command in ("", "datasets", "list", "recipes", "run", "demo", "train", "eval", "attack", "ood", "defend", "crosscheck", "certify"):
        args = [command, "--help"] if command else ["--help"]
        out = runner.invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}, prog_name="robustkit").output
        heading = f"## `robustkit {command}`" if command else "## `robustkit`"
        parts += [heading, "", "```text", out.rstrip(), "```", ""]
    for name in recipes():
        out = runner.invoke(
            app, ["run", name, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}, prog_name="robustkit"
        ).output
        parts += [f"## `robustkit run {name}`", "", "```text", out.rstrip(), "```", ""]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch and 60 test images per recipe")
    parser.add_argument("--docs-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from robustkit.app.recipes import load_recipe, recipes
    from robustkit.app.runner import RecipeOptions

    examples, generated = args.docs_dir / "examples", args.docs_dir / "generated"
    generated.mkdir(parents=True, exist_ok=True)
    for name in recipes():
        module = load_recipe(name)
        extra = {"epochs": 1, "limit": 60} if args.quick else {}
        options = RecipeOptions(dataset="digits", out=examples / name, overwrite=True, progress=False, **extra)
        own = {"deepfool_steps": 10} if args.quick and name == "defense-matrix" else {}  # quick: the page builds
        folder = module.run(options, **own)
        (examples / f"{name}.md").write_text(example_page(name, module, folder))
        print(f"example: {examples / name}.md")
    (generated / "agreement.md").write_text(agreement_table(args.quick))
    (generated / "benchmarks.md").write_text(benchmarks_table())
    (generated / "eval-report.md").write_text(eval_example(args.docs_dir, args.quick))
    (args.docs_dir / "cli.md").write_text(cli_reference())
    (args.docs_dir / "reference.md").write_text(component_reference())
    output = run_tutorial(args.docs_dir / "own-model.md")
    (generated / "own-model-output.md").write_text("```text\n" + output + "```\n")
    printed, reading = certify_example(args.docs_dir / "certify.md", args.quick)
    (generated / "certify-output.md").write_text(printed)
    (generated / "certify-reading.md").write_text(reading)
    (generated / "corruptions-digits.md").write_text(corruption_summary(examples / "corruption-robustness"))
    (generated / "provenance.md").write_text(provenance())


if __name__ == "__main__":
    main()
