"""Optional backend libraries (ART, torchattacks, foolbox, pytorch-ood), imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import BackendMissingError

EXTRAS = {
    "art": "art",
    "torchattacks": "torchattacks",
    "foolbox": "foolbox",
    "pytorch_ood": "ood",
    "timm": "timm",
    "robustbench": "robustbench",
    "pyautoattack": "autoattack",
}


def require(module: str) -> Any:
    """Import an optional backend, or raise an error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise BackendMissingError(
            f"{top} is not installed ({err}); install it with: pip install 'robustkit[{EXTRAS.get(top, 'all')}]'"
        ) from None
