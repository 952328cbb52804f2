"""Attack adapters, one module per backend; construct them with `robustkit.attack`."""

from .base import Attack

__all__ = ["Attack"]
