"""Sanity checks in run folders: the "Sanity checks" section of report.md, results.json's
``checks``, and what the CLI prints (``--strict`` turns a warning into exit status 3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..evaluate.diagnose import STATUSES, Check

__all__ = ["STATUSES", "STRICT_EXIT", "as_records", "counted", "labelled", "problems", "section", "with_section"]

STRICT_EXIT = 3
"""Exit status of a command run with ``--strict`` whose sanity checks warned or failed."""

MARK = {"pass": "pass", "warn": "**warn**", "fail": "**FAIL**"}


def section(checks: Sequence[Check]) -> list[str]:
    """Markdown lines for the top of a report: one row per check, and what to make of them."""
    if not checks:
        return []
    problems = [c for c in checks if c.status != "pass"]
    verdict = (
        "All checks pass."
        if not problems
        else f"{len(problems)} of {len(checks)} checks warn or fail: the numbers below that they concern are not "
        "trustworthy as they stand (see each check's advice, and docs/checks.md)."
    )
    rows = [f"| {c.name} | {MARK[c.status]} | {c.detail.replace('|', '/')} |" for c in checks]
    return ["## Sanity checks", "", verdict, "", "| check | status | what it means |", "|---|---|---|", *rows, ""]


def with_section(lines: list[str], checks: Sequence[Check]) -> list[str]:
    """``lines`` with the sanity-check section before the first section or finding."""
    extra = section(checks)
    if not extra:
        return lines
    at = next(
        (i for i, line in enumerate(lines) if i > 0 and line.startswith(("## ", "Finding", "**Finding"))), len(lines)
    )
    return [*lines[:at], *extra, *lines[at:]]


def labelled(check: Check, what: str) -> Check:
    """The check with what it is about in its name, e.g. ``ood_auroc (energy)``."""
    return dataclasses.replace(check, name=f"{check.name} ({what})")


def counted(checks: Sequence[Check]) -> list[Check]:
    """Each check labelled with the number of images it ran on (its ``n``), e.g. ``input_scale (256 images)``,
    so a report that also quotes other counts says which is which."""
    return [labelled(c, f"{c.values['n']} images") if c.values.get("n") is not None else c for c in checks]


def as_records(checks: Sequence[Check]) -> list[dict[str, Any]]:
    """The checks as JSON records for results.json."""
    return [c.as_dict() for c in checks]


def problems(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The warned or failed check records of a results.json."""
    return [c for c in results.get("checks", []) if c.get("status") != "pass"]


def adaptive_row(check: Check, subject: str, oblivious: str, already: str, strengthen: str) -> Check:
    """``adaptive_vs_oblivious`` for a report row whose attack already goes through the defense.

    ``subject`` names that attack ("FGSM through the filter (BPDA)"), ``oblivious`` the one made on
    the undefended model, ``already`` what the row already does (so the advice is not to do it), and
    ``strengthen`` how to make it stronger. When the adaptive attack leaves more accuracy, the lower
    (oblivious) number is the defense's worth (Athalye et al. 2018, §4.1: a straight-through
    gradient can mislead); within noise, the check passes without calling it "as strong".
    """
    v = check.values
    adaptive, oblivious_acc, tol = v["adaptive_accuracy"], v["oblivious_accuracy"], v["tolerance"]
    if adaptive <= oblivious_acc:
        return check
    leaves = f"{subject} leaves {adaptive:.1%} accuracy, more than {oblivious}"
    if check.status == "pass":
        detail = (
            f"{leaves} ({oblivious_acc:.1%}) but within sampling noise (±{tol:.1%}): no sign of masked gradients on "
            f"these images, and no stronger attack either; the lower number, {oblivious_acc:.1%}, is the defense's worth"
        )
    else:
        detail = (
            f"{leaves} ({oblivious_acc:.1%}, noise ±{tol:.1%}): {already}. Take the lower number, {oblivious_acc:.1%}, "
            f"as the defense's worth, and strengthen this attack ({strengthen}) before reporting one for it"
        )
    return dataclasses.replace(check, detail=detail)
