"""torch.distributed support: which examples this process takes, and combining the processes' results.

When a default process group is initialised with more than one process, robustkit's
evaluation functions split the data DistributedSampler-style but without padding: rank r
takes the examples r, r + W, r + 2W, … (W = world size), so every example is counted
exactly once, and each keeps its global index (for per-example seeds). The ranks' partial
results are then combined so that every rank returns the numbers one process would.

A rank that fails does not leave the others waiting: every rank reaches the one collective
call, the failing rank re-raises its error and the others raise a `RuntimeError` naming it.
`on_first_rank` runs work once, on rank 0, and hands its result to the other ranks (which wait
for it): a shared cache file written once, checks computed once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def world(distributed: bool = True) -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group; ``(0, 1)`` without one
    (or when ``distributed`` is False: each process then works on the data it was given)."""
    if not distributed:
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(compute: Callable[[], T], size: int) -> list[T]:
    """Run ``compute`` on every rank and return every rank's result, in rank order.

    With ``size == 1`` this is ``[compute()]``. Otherwise results travel through
    ``all_gather_object`` (so they must pickle); a rank's exception is re-raised on that
    rank, and the other ranks raise a `RuntimeError` that names it.
    """
    if size == 1:
        return [compute()]
    import torch.distributed as dist

    error: BaseException | None = None
    try:
        payload: tuple[str, Any] = ("ok", compute())
    except Exception as err:  # every rank must still reach the collective below
        error, payload = err, ("error", f"{type(err).__name__}: {err}")
    results: list[Any] = [None] * size
    dist.all_gather_object(results, payload)
    if error is not None:
        raise error
    failed = [(rank, msg) for rank, (status, msg) in enumerate(results) if status == "error"]
    if failed:
        rank, msg = failed[0]
        raise RuntimeError(f"rank {rank} of {size} failed: {msg}")
    return [value for _, value in results]


def on_first_rank(compute: Callable[[], T], distributed: bool = True) -> T:
    """``compute()`` run on rank 0 only; every rank returns rank 0's result.

    Outside a process group (or with one process) this is ``compute()``. Otherwise the other
    ranks wait in ``broadcast_object_list`` (the result must pickle) until rank 0 is done; an
    exception is re-raised on rank 0 and the other ranks raise a `RuntimeError` that names it,
    so no rank is left waiting.
    """
    rank, size = world(distributed)
    if size == 1:
        return compute()
    import torch.distributed as dist

    error: BaseException | None = None
    payload: list[Any] = [None]
    if rank == 0:
        try:
            payload = [("ok", compute())]
        except Exception as err:  # the other ranks are waiting in the broadcast below
            error, payload = err, [("error", f"{type(err).__name__}: {err}")]
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    status, value = payload[0]
    if status == "error":
        raise RuntimeError(f"rank 0 of {size} failed: {value}")
    return value


def sum_counts(compute: Callable[[], dict[str, int]], size: int) -> dict[str, int]:
    """``compute()``'s integer counts summed over the ranks (exact; every rank gets the sums)."""
    parts = gather(compute, size)
    return {key: sum(int(part[key]) for part in parts) for key in parts[0]}


def merge_rows(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Rows scattered over ranks, ``(global index, rows)`` per rank, put back in index order."""
    index = torch.cat([i for i, _ in parts])
    rows = torch.cat([r for _, r in parts])
    out = torch.empty_like(rows)
    out[index] = rows
    return out
