"""Liveness: one log line per stage of a long run, whatever the progress-bar setting.

A stage (a training run, an attack of a suite, a corruption, a σ of certification, a recipe's
run) logs through the ``robustkit`` logger when it starts, an estimate of the time left after
its first batch, and one line with its count and time when it ends::

    with stage("APGD-CE", total=len(x)) as st:
        for batch in batches:
            ...
            st.advance(len(batch))

The library only logs; nothing is printed until the application configures logging (the CLI
does: `robustkit.app.logs.configure_logging`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

LOGGER = "robustkit"
log = logging.getLogger(LOGGER)


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 5 s``, ``1 h 02 min``: a duration as a log line says it."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Stage:
    """A timed stage: counts what it has done (`advance`) and logs its start, one estimate of the
    time left after the first batch (when the total is known and not yet reached), steps (`lap`)
    and its end (`end`). ``total`` may be updated while it runs (an estimate)."""

    def __init__(
        self, name: str, total: int | None = None, unit: str = "images", logger: logging.Logger = log, interleaved: bool = False
    ):
        self.name, self.total, self.unit, self.logger = name, total, unit, logger
        self.done = 0
        self.seconds_spent = 0.0  # time inside `timed` blocks, for stages that run interleaved with others
        self.started = time.perf_counter()
        self._lap = (0, self.started)
        self._estimated = False
        self._timed = interleaved  # its time is its `timed` blocks' only
        self.note = ""
        """Said at the end, after the count and time (set it while the stage runs)."""

    @property
    def seconds(self) -> float:
        """Seconds spent on the stage: its `timed` blocks when it has any, else the time since it started."""
        return self.seconds_spent if self._timed else time.perf_counter() - self.started

    def _count(self) -> str:
        """``12/100 images``, ``100 images``, or ``done`` for a stage that counts nothing (no ``unit``)."""
        if not self.unit:
            return "done"
        return f"{self.done}/{self.total} {self.unit}" if self.total is not None and self.done < self.total else f"{self.done} {self.unit}"

    def start(self, note: str = "") -> Stage:
        """Log the start: the name, the total, and ``note``."""
        what = f"{self.total} {self.unit}" if self.total is not None and self.unit else ""
        self.logger.info("%s: started%s%s", self.name, f" ({what})" if what else "", f"; {note}" if note else "")
        return self

    def advance(self, n: int = 1) -> None:
        """``n`` more done; after the first batch, one line with the time left (when the total is known)."""
        self.done += n
        if self._estimated or not self.total or self.done >= self.total or self.done <= 0:
            return
        self._estimated = True
        spent = self.seconds
        left = spent * (self.total - self.done) / self.done
        self.logger.info("%s: %s in %s, about %s left", self.name, self._count(), duration(spent), duration(left))

    @contextlib.contextmanager
    def timed(self, n: int) -> Iterator[None]:
        """Count the block's time as this stage's, then `advance` by ``n`` (stages that interleave)."""
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.spent(time.perf_counter() - begin)
        self.advance(n)

    def spent(self, seconds: float, n: int = 0) -> None:
        """``seconds`` more of this stage's own time (stages that interleave), and `advance` by ``n``."""
        self._timed = True
        self.seconds_spent += seconds
        if n:
            self.advance(n)

    def lap(self, label: str, note: str = "") -> None:
        """One line for a step of the stage (an epoch): what it did since the last lap, in how long, and
        the time left for the whole stage."""
        done, since = self._lap
        now = time.perf_counter()
        self._lap = (self.done, now)
        left = ""
        if self.total and 0 < self.done < self.total:
            left = f", about {duration((now - self.started) * (self.total - self.done) / self.done)} left"
        self.logger.info(
            "%s, %s: %d %s in %s%s%s", self.name, label, self.done - done, self.unit, duration(now - since),
            f" ({note})" if note else "", left,
        )  # fmt: skip

    def end(self) -> None:
        """Log the end: the count, the time, and `note`."""
        note = f", {self.note}" if self.note else ""
        self.logger.info("%s: %s in %s%s", self.name, self._count(), duration(self.seconds), note)


@contextlib.contextmanager
def stage(name: str, total: int | None = None, unit: str = "images", note: str = "") -> Iterator[Stage]:
    """A `Stage` that logs its start (with ``note``) and its end; interrupted (Ctrl-C), it logs how far it
    got. An error ends it without a line: the error says what happened."""
    st = Stage(name, total, unit).start(note)
    try:
        yield st
    except KeyboardInterrupt:
        log.info("%s: stopped after %s, %s", name, st._count(), duration(st.seconds))
        raise
    st.end()
