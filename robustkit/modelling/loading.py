"""Load a model: by name (``robustbench:NAME``, ``timm:NAME``, ``torchvision:NAME``; `robustkit.modelling.zoo`),
from ``module:factory`` plus a state_dict, or from a file alone (a robustkit checkpoint, TorchScript, or, only
when asked, a pickled module). One loader, `load_model`, behind ``rk.load_model`` and every command's ``--model``.

Nothing here ever suggests deleting a file it cannot read: it says what the file seems to
be and which option reads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.checks import resolve_device
from ..core.errors import CheckpointError
from .checkpoint import FORMAT, is_torchscript, load_checkpoint, load_state, read_weights, state_dict_of
from .zoo import SOURCES, named_model, split_source

SOURCE_FORMS = "module:factory (or file.py:factory), robustbench:NAME, timm:NAME or torchvision:NAME"


def import_factory(spec: str) -> Any:
    """The callable named by ``"package.module:name"`` or ``"path/to/file.py:name"``."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        hint = f"; for a weights file use --weights {spec}" if Path(spec).suffix in (".pt", ".pth", ".ckpt") else ""
        if not hint and spec.replace("_", "").isalnum():
            hint = f"; a model by name is timm:{spec} or torchvision:{spec}"
        raise ValueError(
            f"--model {spec!r} must look like module:factory (e.g. torchvision.models:resnet18) or name a model "
            f"({', '.join(f'{s}:NAME' for s in SOURCES)}){hint}"
        )
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


def load_model(
    source: str | Path | None = None,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    dataset: str | None = None,
    threat_model: str | None = None,
    model_dir: str | Path | None = None,
    download: bool = False,
    unsafe_pickle: bool = False,
    device: str | torch.device = "auto",
) -> nn.Module:
    """A model in eval mode on ``device`` that takes [0, 1] pixels.

    ``source``:

    - ``"robustbench:NAME"``: RobustBench's zoo entry for ``dataset`` (cifar10, cifar100, imagenet;
      default cifar10) and ``threat_model`` (Linf, L2, corruptions; default Linf), its weights read from
      ``model_dir`` in RobustBench's layout ``<dataset>/<threat_model>/<NAME>.pt`` (default
      ``~/.cache/robustkit/robustbench``, or ``$ROBUSTKIT_CACHE/robustbench``);
    - ``"timm:NAME"``, ``"torchvision:NAME"``: the architecture with its pretrained weights from the
      library's own cache and its normalisation as the first layer;
    - ``"module:factory"`` (or ``"file.py:factory"``): the architecture the callable builds (called with
      ``num_classes=`` when given);
    - a `Path` (or ``None`` with ``weights``): a file alone, a robustkit checkpoint, a TorchScript file
      or, with ``unsafe_pickle=True``, a whole pickled module (``torch.save(model)``; loading one runs code
      from the file, so only for files you trust).

    ``weights``: a local state_dict (a plain one, ``{"state_dict": ...}`` or a robustkit checkpoint; for
    RobustBench, a checkpoint as RobustBench's download gives it), read instead of the source's own
    weights: nothing is looked up or downloaded. ``num_classes``: a new, untrained head of that size (timm,
    torchvision, module:factory). ``download``: fetch a named model's missing weights (off by default;
    a missing file is a `WeightsNotFoundError` naming it and how the library downloads it).

    Named models carry ``robustkit_input`` (`robustkit.modelling.zoo.InputSpec`): their input size and
    the resize / centre crop that brings a data set's images there.
    """
    target = resolve_device(device)
    if isinstance(source, Path):  # a file alone
        if weights is not None:
            raise ValueError(f"source {source} is a file and weights= is given too: pass the file once, as weights=")
        source, weights = None, source
    if source is not None and not isinstance(source, str):
        raise TypeError(f"source must be a string such as 'timm:resnet18' or a Path, got {type(source).__name__}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes={num_classes!r} must be a positive number of classes")
    named = split_source(source) if source else None
    if named is not None:
        options = {"dataset": dataset, "threat_model": threat_model, "model_dir": model_dir, "unsafe_pickle": unsafe_pickle}
        net = named_model(*named, weights=weights, num_classes=num_classes, download=download, **options)
        return net.to(target).eval()
    if threat_model is not None or model_dir is not None:
        raise ValueError(f"threat_model and model_dir apply to robustbench:NAME models, not {source or weights}; drop them")
    return _from_files(weights, source, num_classes=num_classes, unsafe_pickle=unsafe_pickle, target=target)


def _from_files(
    weights: str | Path | None, factory: str | None, *, num_classes: int | None, unsafe_pickle: bool, target: torch.device
) -> nn.Module:
    """``module:factory`` with a state_dict, or a file alone (`load_model`)."""
    if factory is None and weights is None:
        raise ValueError(f"no model given: pass --model ({SOURCE_FORMS}) and/or --weights PATH")
    model: Any = None
    if factory is not None:
        build = import_factory(factory)
        model = build() if num_classes is None else build(num_classes=num_classes)
        if not isinstance(model, nn.Module):
            raise TypeError(f"--model {factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
    elif num_classes is not None:
        raise ValueError("num_classes builds a new head, which needs the architecture: pass --model with it")
    if weights is None:
        return model.to(target).eval()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if is_torchscript(path):
        if model is not None:
            raise ValueError(f"{path} is a TorchScript model, which carries its own architecture: drop --model")
        return torch.jit.load(str(path), map_location=target).eval()
    payload = read_weights(path, target, unsafe_pickle=unsafe_pickle)
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
    load_state(model, state_dict_of(payload, path), path, str(factory))
    return model.to(target).eval()
