"""Where the recipes live, what they are called, and how to load one.

The recipes are scripts in the repository's top-level ``recipes/`` folder; the wheel
ships the same folder as ``robustkit/recipes`` (see ``pyproject.toml``). `recipe_dir`
is the one place that knows both locations. A recipe module defines ``NAME``,
``SUMMARY``, ``ORDER``, ``DEFAULT_DATASET`` and ``run(options, **own_options)``; its
own options are keyword arguments annotated ``Annotated[type, "help text"]``.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType


def recipe_dir() -> Path:
    """The recipes folder: inside the installed package (a wheel), or beside it (a checkout)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "recipes", package.parent / "recipes"):
        if (candidate / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"robustkit's recipes are missing: neither {package / 'recipes'} nor {package.parent / 'recipes'} exists; "
        "reinstall robustkit (pip install robustkit) or run from a full checkout"
    )


@dataclass(frozen=True)
class RecipeInfo:
    """A recipe's name, one-line summary, position in the list and file, read without importing it."""

    name: str
    summary: str
    order: int
    default_dataset: str
    path: Path


def _constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


@cache
def recipes() -> dict[str, RecipeInfo]:
    """Every recipe, in the order of the documented experiments."""
    found = []
    for path in recipe_dir().glob("*.py"):
        if path.name.startswith("_"):
            continue
        c = _constants(path)
        missing = [k for k in ("NAME", "SUMMARY", "ORDER", "DEFAULT_DATASET") if k not in c]
        if missing:
            raise ValueError(f"recipe file {path} lacks {', '.join(missing)}")
        found.append(RecipeInfo(str(c["NAME"]), str(c["SUMMARY"]), int(c["ORDER"]), str(c["DEFAULT_DATASET"]), path))  # type: ignore[call-overload]
    return {r.name: r for r in sorted(found, key=lambda r: r.order)}


@cache
def load_recipe(name: str) -> ModuleType:
    """Import recipe ``name`` (e.g. ``fgsm-sweep``)."""
    known = recipes()
    if name not in known:
        raise ValueError(f"unknown recipe {name!r}; valid names: {', '.join(known)}")
    module_name = f"robustkit_recipe_{name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, known[name].path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
