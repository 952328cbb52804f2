"""Batch iteration: the one loop every batched computation in robustkit goes through."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset


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


def _as_labels(labels: object) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        return labels
    try:
        return torch.as_tensor(labels, dtype=torch.int64)
    except (TypeError, ValueError):
        raise TypeError(f"labels must be class indices (a tensor or a list of ints), got {type(labels).__name__}") from None


def _pair(batch: object, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{source} must yield (image, label) pairs, got {type(batch).__name__}")
    return batch[0], _as_labels(batch[1])


def labelled_batches(
    x: object, y: torch.Tensor | None = None, batch_size: int = 256
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches from tensors ``x, y``; an ImageSet; an ``(x, y)`` pair; or a
    Dataset / DataLoader of ``(image, label)`` pairs (a DataLoader keeps its own batch size).

    Only one batch is in memory at a time, so evaluation memory does not grow with the data set.
    """
    if isinstance(x, torch.Tensor):
        if y is None:
            raise TypeError("labels are missing: pass y with a tensor x, or a Dataset/DataLoader of (image, label) pairs")
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
        for s in slices(len(x), batch_size):
            yield x[s], y[s]
        return
    if y is not None:
        raise TypeError(f"pass y only with a tensor x: a {type(x).__name__} carries its own labels")
    if isinstance(getattr(x, "x", None), torch.Tensor) and isinstance(getattr(x, "y", None), torch.Tensor):
        yield from labelled_batches(x.x, x.y, batch_size)  # type: ignore[attr-defined]
    elif isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], torch.Tensor):
        yield from labelled_batches(x[0], x[1], batch_size)
    elif isinstance(x, DataLoader):
        for batch in x:
            yield _pair(batch, "the DataLoader")
    elif isinstance(x, Dataset):
        for batch in DataLoader(x, batch_size=batch_size):
            yield _pair(batch, "the Dataset")
    else:
        raise TypeError(
            "expected images as a tensor (with labels y), an ImageSet, an (x, y) pair, or a Dataset/DataLoader "
            f"of (image, label) pairs; got {type(x).__name__}"
        )


def image_batches(x: object, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Image batches from a tensor, an ImageSet, or a Dataset / DataLoader (labels, if any, dropped)."""
    if isinstance(x, torch.Tensor):
        for s in slices(len(x), batch_size):
            yield x[s]
        return
    if isinstance(x, (DataLoader, Dataset)):
        loader = x if isinstance(x, DataLoader) else DataLoader(x, batch_size=batch_size)
        for batch in loader:
            yield batch[0] if isinstance(batch, (tuple, list)) else batch
        return
    for images, _ in labelled_batches(x, None, batch_size):
        yield images
