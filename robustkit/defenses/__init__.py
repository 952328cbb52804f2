"""Defenses; construct them with :func:`robustkit.defense`."""

from .base import Defense

__all__ = ["Defense"]
