"""Load a user's model: ``module:factory`` plus a state_dict, TorchScript, a robustkit checkpoint,
or (only when asked) a pickled module.

Nothing here ever suggests deleting a file it cannot read: it says what the file seems to
be and which option reads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.checks import resolve_device
from ..core.errors import CheckpointError
from .checkpoint import FORMAT, load_checkpoint


def import_factory(spec: str) -> Any:
    """The callable named by ``"package.module:name"`` or ``"path/to/file.py:name"``."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        hint = f"; for a weights file use --weights {spec}" if Path(spec).suffix in (".pt", ".pth", ".ckpt") else ""
        raise ValueError(f"--model {spec!r} must look like module:factory (e.g. torchvision.models:resnet18){hint}")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--model {spec!r}: {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault(path.stem, module)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"--model {spec!r}: cannot import {module_name} ({err}); is it on PYTHONPATH?") from None
    if not hasattr(module, attr):
        raise ValueError(f"--model {spec!r}: {module_name} has no attribute {attr!r}")
    return getattr(module, attr)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


def _state_dict(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    if (isinstance(payload, dict) and payload.get("format") == FORMAT) or (isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict)):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state_dict of tensors")
    return payload


def load_model(
    weights: str | Path | None = None,
    factory: str | None = None,
    *,
    unsafe_pickle: bool = False,
    device: str | torch.device = "auto",
) -> nn.Module:
    """A model in eval mode on ``device``.

    - ``factory`` (``module:callable``) builds the architecture; ``weights`` then holds its
      state_dict (a plain one, ``{"state_dict": ...}`` or a robustkit checkpoint).
    - Without ``factory``: a robustkit checkpoint, a TorchScript file, or, with
      ``unsafe_pickle=True``, a whole pickled module (``torch.save(model)``; loading one runs
      code from the file, so only for files you trust).
    """
    target = resolve_device(device)
    if factory is None and weights is None:
        raise ValueError("no model given: pass --weights PATH (and --model module:factory for a state_dict)")
    model: Any = None
    if factory is not None:
        model = import_factory(factory)()
        if not isinstance(model, nn.Module):
            raise TypeError(f"--model {factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is None:
        return model.to(target).eval()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if _is_torchscript(path):
        if model is not None:
            raise ValueError(f"{path} is a TorchScript model, which carries its own architecture: drop --model")
        return torch.jit.load(str(path), map_location=target).eval()
    try:
        payload = torch.load(path, map_location=target, weights_only=True)
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
        payload = torch.load(path, map_location=target, weights_only=False)
    except Exception as err:  # truncated or foreign files raise many types
        raise CheckpointError(
            f"{path} is not a file torch can read ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
            "is it complete, and was it written by torch.save?"
        ) from None
    if isinstance(payload, nn.Module):
        if model is not None:
            raise ValueError(f"{path} holds a whole module, which carries its own architecture: drop --model")
        return payload.to(target).eval()
    if model is None:
        if isinstance(payload, dict) and payload.get("format") == FORMAT:
            return load_checkpoint(path, map_location=target)[0]
        raise CheckpointError(
            f"{path} holds weights only (a state_dict); pass --model module:factory that builds its architecture"
        )
    state = _state_dict(payload, path)
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise CheckpointError(f"{path} does not fit the model from {factory}: {detail}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model from {factory}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    return model.to(target).eval()
