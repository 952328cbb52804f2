"""Comparative words in a report's findings, decided with the sanity checks' own noise tolerance.

A finding that says one number is higher or lower than another, that a curve rises or that a
defense costs accuracy compares two measurements on a finite sample. It uses `noise_tolerance`
(z = 2, as the checks warn) for accuracies and the Mann–Whitney standard error for AUROCs, and
says "within sampling noise" when the difference is inside it, so a finding never contradicts a
check that judged the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..evaluate.checks.base import Z_WARN, noise_tolerance

SAME = "within sampling noise"


@dataclass(frozen=True)
class Difference:
    """``after − before`` and the noise it is judged against (``tolerance``; 0 when the counts are unknown)."""

    before: float
    after: float
    tolerance: float
    n: str  # what the tolerance was computed on, for the sentence ("200 images")

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def beyond(self) -> bool:
        """Whether the difference exceeds the noise."""
        return abs(self.delta) > self.tolerance

    @property
    def up(self) -> bool:
        return self.beyond and self.delta > 0

    @property
    def down(self) -> bool:
        return self.beyond and self.delta < 0

    def word(self, up: str, down: str, same: str = SAME) -> str:
        """``up`` or ``down`` when the difference is beyond the noise, else ``same``."""
        return up if self.up else down if self.down else same

    def noise(self) -> str:
        """``±0.046 on 200 images``, or an empty string when the counts were unknown."""
        return f"±{self.tolerance:.3f} on {self.n}" if self.n else ""

    def within(self) -> str:
        """``within sampling noise (±0.046 on 200 images)``."""
        return f"{SAME} ({self.noise()})" if self.n else SAME


def compare_accuracies(before: float, after: float, n: float | None, z: float = Z_WARN) -> Difference:
    """Two accuracies on ``n`` images each (`noise_tolerance` at ``z``; no tolerance when ``n`` is unknown)."""
    if not n:
        return Difference(before, after, 0.0, "")
    count = round(n)
    return Difference(before, after, noise_tolerance(before, after, count, z), f"{count} images")


def compare_aurocs(before: float, after: float, n_id: float | None, n_ood: float | None, z: float = Z_WARN) -> Difference:
    """Two AUROCs, each on ``n_id`` ID and ``n_ood`` OOD images: ``z`` standard errors of a difference of two
    independent AUROCs at chance, √2·√((n_id + n_ood + 1) / (12·n_id·n_ood)) (Mann & Whitney 1947), the
    scale the `ood_auroc` check uses."""
    if not n_id or not n_ood:
        return Difference(before, after, 0.0, "")
    se = math.sqrt((n_id + n_ood + 1) / (12 * n_id * n_ood))
    return Difference(before, after, z * math.sqrt(2) * se, f"{round(n_id)} ID and {round(n_ood)} OOD images")
