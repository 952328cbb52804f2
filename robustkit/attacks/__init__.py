"""Attack adapters, one module per backend; construct them with `attack`."""

from .base import Attack

__all__ = ["Attack"]
