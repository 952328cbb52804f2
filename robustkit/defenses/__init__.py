"""Defenses; construct them with `robustkit.defense`."""

from .base import Defense

__all__ = ["Defense"]
