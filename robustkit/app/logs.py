"""The command line's log lines: the ``robustkit`` logger's records on stderr (`robustkit.core.stages`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from ..core.stages import LOGGER


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Plain lines on whatever ``sys.stderr`` is when a record comes (pytest and CliRunner swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> Callable[[], None]:
    """Print the ``robustkit`` logger's records at ``level`` and above on stderr; returns the function
    that undoes it (the CLI calls it when the command ends).

    On a terminal through rich's `RichHandler` on rich's global console, which this moves to stderr:
    the progress bars draw on that console too, so a log line prints above a live bar, not through
    it. Otherwise (a CI log, a batch job, a pipe) as plain ``HH:MM:SS message`` lines. Under ``torchrun``
    each line starts with its process's rank (each counts its own share of the images). A second call
    replaces the handler the first one added."""
    logger = logging.getLogger(LOGGER)
    before = (logger.level, logger.propagate)
    for old in [h for h in logger.handlers if getattr(h, "robustkit", False)]:
        logger.removeHandler(old)
    handler: logging.Handler
    rank = f"[rank {os.environ.get('RANK', '0')}] " if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else ""
    if sys.stderr.isatty():
        import rich
        from rich.logging import RichHandler

        rich.reconfigure(stderr=True)
        handler = RichHandler(console=rich.get_console(), show_level=False, show_path=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter(f"{rank}%(message)s"))
    else:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(f"%(asctime)s {rank}%(message)s", "%H:%M:%S"))
    handler.robustkit = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]

    return undo
