"""Defenses; construct them with `defense`."""

from .base import Defense

__all__ = ["Defense"]
