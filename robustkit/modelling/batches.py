"""Batch iteration: the one loop every batched computation in robustkit goes through."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset


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


def indexed_batches(
    x: object, y: torch.Tensor | None = None, batch_size: int = 256, rank: int = 0, world: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`labelled_batches` with each example's position in the whole data: ``(images, labels, index)``.

    With ``world > 1`` only this rank's part: the examples ``rank, rank + world, …`` (a
    DistributedSampler-style split without padding, so each example goes to exactly one rank).
    Tensors, ImageSets and map-style Datasets are read only at those positions; a DataLoader
    (or an IterableDataset) is read whole on every rank, which keeps its own rows, so it must
    visit the examples in a fixed order (no shuffling).
    """
    for xb, yb, index in _indexed(x, y, batch_size, rank, world, labelled=True):
        assert yb is not None
        yield xb, yb, index


def indexed_images(
    x: object, batch_size: int = 256, rank: int = 0, world: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`image_batches` with each image's position in the whole data, split over ranks as `indexed_batches`."""
    for xb, _, index in _indexed(x, None, batch_size, rank, world, labelled=False):
        yield xb, index


def _indexed(
    x: object, y: torch.Tensor | None, batch_size: int, rank: int, world: int, labelled: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} must lie in [0, world={world})")
    if world == 1:  # exactly the unsharded iteration, positions counted along
        offset = 0
        batches = labelled_batches(x, y, batch_size) if labelled else ((b, None) for b in image_batches(x, batch_size))
        for xb, yb in batches:
            yield xb, yb, torch.arange(offset, offset + len(xb))
            offset += len(xb)
        return
    part = _part(x, y, rank, world, labelled)
    if part is not None:  # read only this rank's examples; local position j is global rank + j·world
        offset = 0
        for xb, yb, _ in _indexed(*part, batch_size, 0, 1, labelled):
            yield xb, yb, rank + world * torch.arange(offset, offset + len(xb))
            offset += len(xb)
        return
    if isinstance(x, DataLoader):
        from torch.utils.data import RandomSampler
        from torch.utils.data.distributed import DistributedSampler

        if isinstance(x.sampler, DistributedSampler):
            raise ValueError(
                "the DataLoader already has a DistributedSampler: robustkit splits the data over the ranks "
                "itself; pass the whole data set (or distributed=False to evaluate each rank's own part)"
            )
        if isinstance(x.sampler, RandomSampler):
            raise ValueError(
                "the DataLoader shuffles (shuffle=True): with several ranks every rank must see the examples "
                "in the same order; use shuffle=False"
            )
    offset = 0
    batches = labelled_batches(x, y, batch_size) if labelled else ((b, None) for b in image_batches(x, batch_size))
    for xb, yb, index in ((xb, yb, torch.arange(offset, offset + len(xb))) for xb, yb in batches):
        offset += len(xb)
        keep = index % world == rank
        if keep.any():
            yield xb[keep], None if yb is None else yb[keep], index[keep]


def _part(x: object, y: torch.Tensor | None, rank: int, world: int, labelled: bool) -> tuple[object, object] | None:
    """``(x, y)`` restricted to the examples ``rank::world``, or None where that cannot be done lazily."""
    if isinstance(x, torch.Tensor):
        if labelled and not isinstance(y, torch.Tensor):
            return x, y  # let labelled_batches name the problem
        return x[rank::world], None if y is None else y[rank::world]
    if y is None and isinstance(getattr(x, "x", None), torch.Tensor) and isinstance(getattr(x, "y", None), torch.Tensor):
        return x.x[rank::world], x.y[rank::world] if labelled else None  # type: ignore[attr-defined]
    if y is None and isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], torch.Tensor):
        return _part(x[0], x[1], rank, world, labelled)
    if isinstance(x, Dataset) and not isinstance(x, (DataLoader, IterableDataset)) and hasattr(x, "__len__"):
        return Subset(x, range(rank, len(x), world)), y
    return None
