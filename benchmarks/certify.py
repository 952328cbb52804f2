"""Randomised smoothing's cost: ``CERTIFY`` per image against its floor of (n0 + n) forward passes."""

from __future__ import annotations

import torch

from benchmarks.timing import timed
from robustkit.defenses.smoothing import art_certify, certify


def bench_certify(model: torch.nn.Module, repeats: int, images: int = 8, n0: int = 100, n: int = 1000) -> list[dict]:
    """The reference ``certify`` (and ART's) on ``images`` CIFAR-shaped images vs the floor: (n0 + n)
    forward passes per image in full batches of 1000 noisy copies, timed on the same model."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(images, 3, 32, 32, generator=g)
    batch = torch.rand(1000, 3, 32, 32, generator=g)

    def forward() -> None:
        with torch.no_grad():
            model(batch)

    floor = timed(forward, repeats) * images * (n0 + n) / len(batch)
    ours = timed(lambda: certify(model, x, 0.25, n0, n, batch_size=1000), repeats)
    theirs = timed(lambda: art_certify(model, x, 0.25, n0, n, batch_size=1000), repeats)
    per_image = 1000 * ours / images
    return [
        {
            "what": f"certify, n0={n0} n={n}: reference / floor of n0+n forward passes ({per_image:.0f} ms per image)",
            "ratio": ours / floor,
            "goal": "<= 1.2",
            "ok": ours / floor <= 1.2,
        },
        {
            "what": f"certify, n0={n0} n={n}: ART's PyTorchRandomizedSmoothing / reference",
            "ratio": theirs / ours,
            "goal": "–",
            "ok": None,
        },
    ]
