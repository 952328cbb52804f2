"""Batch iteration: the one loop every batched computation in robustkit goes through."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


def slices(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)``, ``batch_size`` long (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def map_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``fn`` over ``x`` in batches (each moved to ``device``), results concatenated on the CPU."""
    return torch.cat([fn(x[s] if device is None else x[s].to(device)).cpu() for s in slices(len(x), batch_size)])
