"""Exceptions robustkit raises on purpose: each message names the problem and the fix."""

from __future__ import annotations


class RobustkitError(Exception):
    """Base class of robustkit's own errors (the CLI prints these as one line)."""


class DatasetNotFoundError(RobustkitError, FileNotFoundError):
    """A dataset is not on disk and may not be downloaded."""


class CheckpointError(RobustkitError, ValueError):
    """A checkpoint file is corrupt, truncated or not robustkit's."""


class BackendMissingError(RobustkitError, ImportError):
    """An optional backend library is not installed."""


class NotFittedError(RobustkitError, RuntimeError):
    """A detector was asked to score before `fit`."""


class NoGradientError(RobustkitError, ValueError):
    """A gradient attack was asked to attack a model whose output is cut off from its input in autograd."""


class RobustkitWarning(UserWarning):
    """A sanity check that warned or failed on a number robustkit returned (filter with
    ``warnings.filterwarnings("ignore", category=RobustkitWarning)``; the check itself stays in the result)."""
