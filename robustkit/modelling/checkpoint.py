"""Checkpoints: a model's spec, weights and metadata in one file, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError
from ..core.files import atomic_path
from .models import build_model

FORMAT = "robustkit-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, spec: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Save ``model`` with the ``spec`` that rebuilds it; readers never see a partial file."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a robustkit checkpoint; returns ``(model in eval mode, metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `robustkit train`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
            "is the file complete? robustkit.modelling.loading.load_model reads state_dicts, TorchScript and saved modules"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a robustkit checkpoint (a bare state_dict or another tool's file?); "
            "pass it as --weights PATH with --model module:factory (robustkit.modelling.loading.load_model)"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}; expected {VERSION}")
    try:
        model = build_model(payload["spec"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path} does not match its own model spec: {str(err).splitlines()[0]}") from None
    model.to(map_location).eval()
    return model, payload.get("meta", {})
