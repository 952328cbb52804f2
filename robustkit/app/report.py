"""A run folder: ``results.json``, PNG figures and ``report.md``, all written atomically."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from ..core.files import write_json, write_text


class RunFolder:
    """A folder for one run's numbers, figures and report.

    An existing non-empty folder is refused unless ``overwrite``; ``results.json`` is
    written last, so a folder without it is an unfinished run.
    """

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = self.check(path, overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "results.json").unlink(missing_ok=True)
        self.started = time.time()
        self.figures: list[str] = []

    @staticmethod
    def check(path: str | Path, overwrite: bool = False) -> Path:
        """Refuse ``path`` as it would be refused when opened (a file, or a non-empty folder
        without ``overwrite``), creating nothing: a command that writes its folder only at the
        end checks it before the work."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder; choose another --out")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"run folder {path} exists and is not empty; pass --overwrite or another --out")
        return path

    def figure(self, name: str) -> Path:
        """Path for a figure (``name.png``); registers it for the report."""
        self.figures.append(f"{name}.png")
        return self.path / f"{name}.png"

    def finish(self, results: dict[str, Any], report_md: str) -> Path:
        """Write report.md, then results.json (with run metadata and the figure list)."""
        missing = [f for f in self.figures if not (self.path / f).is_file()]
        if missing:
            raise RuntimeError(f"figures were registered but not written: {missing}")
        write_text(self.path / "report.md", report_md)
        meta = {
            "seconds": round(time.time() - self.started, 2),
            "python": platform.python_version(),
            "versions": versions(),
            "source": source(),
            "figures": self.figures,
        }
        write_json(self.path / "results.json", {**results, "run": meta})
        return self.path


def versions() -> dict[str, str | None]:
    """Versions of robustkit and the libraries behind the numbers (``None``: not installed)."""
    from importlib import metadata

    import robustkit

    out: dict[str, str | None] = {"robustkit": robustkit.__version__}
    for name in ("torch", "torchvision", "numpy", "torchattacks", "adversarial-robustness-toolbox", "foolbox", "pytorch-ood"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def source() -> dict[str, Any] | None:
    """The git commit robustkit runs from, and whether its tracked files differ from it
    (``None`` for an installed wheel or without git): which code made a run's numbers."""
    import subprocess

    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / ".git").exists():
        return None
    try:
        git = ["git", "-C", str(checkout)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "modified": bool(status.stdout.strip())}


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a finished run's results.json."""
    return json.loads((Path(path) / "results.json").read_text())


def fmt(value: Any, digits: int = 4) -> str:
    """Format a number for a Markdown table ('–' for missing)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def images_md(names: list[str]) -> str:
    """Markdown that shows figures side by side."""
    return "\n".join(f"![{n}]({n})" for n in names)
