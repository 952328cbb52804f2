"""What every check returns (`Check`, `Diagnosis`) and the noise allowance their comparisons use.

Comparisons of two accuracies measured on ``n`` points allow for sampling noise: a
difference counts when it exceeds ``z`` binomial standard errors of the difference,
``z·sqrt(p1(1−p1)/n + p2(1−p2)/n)`` (at least ``z/(2n)``, i.e. one point for z = 2), with
z = 2 for "warn" (about 5% false alarms for one comparison by chance alone) and z = 4 for
"fail" (below 1 in 10 000). See `noise_tolerance`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core.errors import RobustkitWarning
from ...core.params import jsonable

STATUSES = ("pass", "warn", "fail")
Z_WARN = 2.0  # standard errors of a difference that make a warning ...
Z_FAIL = 4.0  # ... and a failure


@dataclass
class Check:
    """One sanity check: ``status`` is "pass", "warn" or "fail"; ``detail`` says what it means
    and what to do; ``values`` holds the numbers behind it; ``paper`` where it comes from."""

    name: str
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    paper: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name}: status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "values": {k: jsonable(v) for k, v in self.values.items()},
            "paper": self.paper,
        }

    def __str__(self) -> str:
        return f"[{self.status}] {self.name}: {self.detail}"


@dataclass
class Diagnosis:
    """The checks `diagnose` ran, the ones it skipped (name → why), and what they cost.

    ``ok`` is True when no check warns or fails. ``cost`` holds the wall seconds of the whole
    diagnosis, of one run of the attack on the sample, their ratio and the number of attack
    runs (``attack_runs``, in whole-sample units). ``measured`` holds the
    accuracies it measured on the sample (clean, under the attack, ...).
    """

    checks: list[Check]
    skipped: dict[str, str] = field(default_factory=dict)
    sample: int = 0
    measured: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        """The checks that warn or fail."""
        return [c for c in self.checks if not c.ok]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        why = self.skipped.get(name)
        raise KeyError(f"no check {name!r} ran" + (f": {why}" if why else f"; ran: {', '.join(self.names)}"))

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.checks)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for results.json."""
        return {
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
            "skipped": dict(self.skipped),
            "sample": self.sample,
            "measured": {k: jsonable(v) for k, v in self.measured.items()},
            "cost": dict(self.cost),
        }

    def markdown(self) -> str:
        """A Markdown table of the checks (status, name, detail), for reports."""
        rows = ["| status | check | what it means |", "|---|---|---|"]
        rows += [f"| {c.status} | {c.name} | {c.detail.replace('|', '/')} |" for c in self.checks]
        return "\n".join(rows)

    def __str__(self) -> str:
        head = f"diagnosis on {self.sample} points: {'ok' if self.ok else f'{len(self.problems)} problem(s)'}"
        return "\n".join([head, *map(str, self.checks)])


def noise_tolerance(p1: float, p2: float, n: int, z: float = Z_WARN) -> float:
    """How far two accuracies on ``n`` points each may differ by sampling noise alone.

    ``z`` binomial standard errors of the difference, ``z·sqrt((p1(1−p1) + p2(1−p2))/n)``, and
    at least ``z/(2n)`` (one point for z = 2) so that accuracies of 0 or 1 still allow a point.
    Treating the two as independent is conservative for accuracies measured on the same points.
    """
    _check_n(n)
    return max(z * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n), z / (2 * n))


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be the number of points, an integer ≥ 1")
    return n


def _share(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} must lie in [0, 1] (a fraction, not a percentage)")
    return value


def _fmt_eps(eps: float | None) -> str:
    if eps is None:
        return "unbounded"
    k = eps * 255
    if 0 < eps < 1 and abs(k - round(k)) < 1e-6 and f"{eps:.4g}" != f"{eps:.12g}":  # 8/255, but 0.2 stays 0.2
        return f"{round(k)}/255"
    return f"{eps:.4g}"


def _not_above(
    name: str, worse: float, better: float, n: int, keys: tuple[str, str], warn_text: str, pass_text: str, paper: str
) -> Check:
    """Warn (fail) when ``worse`` exceeds ``better`` by more than 2 (4) standard errors."""
    worse, better = _share(keys[0], worse), _share(keys[1], better)
    tol, tol_fail = noise_tolerance(worse, better, n), noise_tolerance(worse, better, n, Z_FAIL)
    excess = worse - better
    values = {keys[0]: worse, keys[1]: better, "excess": excess, "tolerance": tol, "fail_tolerance": tol_fail, "n": n}
    if excess > tol:
        status = "fail" if excess > tol_fail else "warn"
        return Check(name, status, warn_text.format(worse=worse, better=better, tol=tol, n=n), values, paper)
    detail = pass_text.format(worse=worse, better=better, tol=tol, n=n)
    if excess > 0:  # it does leave more, by less than the noise: say so rather than "at least as strong"
        other = keys[1].removesuffix("_accuracy").replace("_", " ")
        detail = detail.split(" (")[0] + (
            f" leaves {worse:.1%}, more than the {other} attack's {better:.1%} but within sampling noise "
            f"(±{tol:.1%}) on {n} images"
        )
    return Check(name, "pass", detail, values, paper)


def warn_problems(checks: list[Check], stacklevel: int = 3) -> list[Check]:
    """Raise a `RobustkitWarning` for each check that warns or fails; return ``checks``."""
    for check in checks:
        if not check.ok:
            warnings.warn(str(check), RobustkitWarning, stacklevel=stacklevel)
    return checks
