"""Checkpoints: a model's spec, weights and metadata in one file, written atomically; and reading
any weights file torch wrote (state_dicts, TorchScript, pickled modules) with errors that say what
the file seems to be and which option reads it."""

from __future__ import annotations

import pickle
import zipfile
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


# ---------------------------------------------------------------- any weights file


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


def read_weights(path: Path, map_location: str | torch.device = "cpu", *, unsafe_pickle: bool = False) -> Any:
    """What ``torch.save`` wrote to ``path`` (tensors and plain containers only, unless ``unsafe_pickle``:
    then also pickled Python objects such as a whole module, whose loading runs code from the file)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a pickle of (disallowed) Python objects: a broken file
            raise CheckpointError(
                f"{path} is not a file torch can read ({str(err).splitlines()[0][:120]}); "
                "is it complete, and was it written by torch.save?"
            ) from None
        if not unsafe_pickle:
            raise CheckpointError(
                f"{path} holds pickled Python objects (a whole saved module?), which run code when loaded; "
                "if you trust the file pass --unsafe-pickle, or save model.state_dict() and pass it with --model"
            ) from None
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated or foreign files raise many types
        raise CheckpointError(
            f"{path} is not a file torch can read ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
            "is it complete, and was it written by torch.save?"
        ) from None


def state_dict_of(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict in ``payload``: a plain one, ``{"state_dict": ...}`` or a robustkit checkpoint."""
    if (isinstance(payload, dict) and payload.get("format") == FORMAT) or (
        isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict)
    ):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state_dict of tensors")
    return payload


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> nn.Module:
    """Load ``state`` into ``model`` strictly, or raise a `CheckpointError` saying that ``path`` does not
    fit ``what`` (the model's name) and which keys or sizes differ."""
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise CheckpointError(f"{path} does not fit the model from {what}: {detail}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model from {what}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    return model
