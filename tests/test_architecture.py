"""The package's shape: layered imports, no import cycles, and a wheel that runs the recipes."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """The layer contracts in pyproject.toml ([tool.importlinter]) are kept."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "Contracts: 2 kept, 0 broken." in proc.stdout


def _cycles(graph, modules):
    """Every module that lies on an import cycle (grimp sees function-level imports too)."""
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    on_cycle, state = set(), {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for nxt in edges[module]:
            if state.get(nxt) == "open":
                on_cycle.update(stack[stack.index(nxt) :])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [])
    return on_cycle


def test_no_import_cycles():
    import grimp

    graph = grimp.build_graph("robustkit")
    modules = {m for m in graph.modules if m.startswith("robustkit")}
    assert len(modules) > 30
    assert not _cycles(graph, modules)
    # the checker itself finds a cycle when there is one
    graph.add_import(importer="robustkit.core.checks", imported="robustkit.core.params")
    assert {"robustkit.core.checks", "robustkit.core.params"} <= _cycles(graph, modules)


def test_wheel_ships_the_recipes_and_runs_one_from_another_folder(tmp_path):
    """Build the wheel, install it (unpacked, as pip does) and run a recipe outside the checkout."""
    from hatchling.builders.wheel import WheelBuilder

    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(tmp_path / "dist"), versions=["standard"])
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert "robustkit/recipes/fgsm_sweep.py" in names and "robustkit/app/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "robustkit = robustkit.app.cli:main" in (site / entry_points).read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "ROBUSTKIT_CACHE": str(tmp_path / "cache")}
    probe = "import robustkit, robustkit.app.recipes as r; print(robustkit.__file__, r.recipe_dir())"
    where = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(site / "robustkit" / "__init__.py"), str(site / "robustkit" / "recipes")]
    args = ["run", "fgsm-sweep", "--dataset", "digits", "--epochs", "1", "--limit", "40", "--no-progress"]
    run = subprocess.run(
        [sys.executable, "-m", "robustkit", *args, "--out", "run"], capture_output=True, text=True, cwd=elsewhere, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((elsewhere / "run" / "results.json").read_text())
    assert results["recipe"] == "fgsm-sweep" and results["untargeted"]["accuracy"][0] == results["clean_accuracy"]
