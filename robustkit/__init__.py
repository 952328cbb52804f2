"""robustkit: one API for adversarial robustness and OOD detection of PyTorch image classifiers.

Public names are imported on first use, so ``import robustkit`` stays fast and loads no
backend (torch, ART, torchattacks, foolbox, pytorch-ood) until it is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "attack": "robustkit.registry",
    "detector": "robustkit.registry",
    "defense": "robustkit.registry",
    "load_dataset": "robustkit.modelling.data",
    "ImageSet": "robustkit.modelling.data",
    "DatasetInfo": "robustkit.modelling.data",
    "with_normalization": "robustkit.modelling.models",
    "model_spec": "robustkit.modelling.models",
    "TrainConfig": "robustkit.modelling.train",
    "train_model": "robustkit.modelling.train",
    "load_model": "robustkit.modelling.loading",
    "load_checkpoint": "robustkit.modelling.checkpoint",
    "save_checkpoint": "robustkit.modelling.checkpoint",
    "evaluate": "robustkit.evaluate",
    "diagnose": "robustkit.evaluate.diagnose",
    "SmoothedClassifier": "robustkit.defenses.smoothing",
    "RobustkitWarning": "robustkit.core.errors",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'robustkit' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    return module if module.__name__ == f"robustkit.{name}" else getattr(module, name)
