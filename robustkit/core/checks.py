"""Input validation and the model-state guard shared by attacks, detectors and defenses."""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
import weakref
from collections.abc import Iterator
from fractions import Fraction

import torch
from torch import nn

from .errors import RobustkitWarning

PIXEL_HINT = (
    "robustkit works in pixel space: pass images in [0, 1] and put mean/std normalisation "
    "inside the model (robustkit.with_normalization)"
)


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """Check that `x` is a non-empty float N×C×H×W tensor of finite values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape N×C×H×W, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; expected a float tensor in [0, 1] (for uint8 images use x.float() / 255)"
        )
    if x.ndim != 4:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected N×C×H×W (use x.unsqueeze(0) for one image)")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one image")
    lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; NaN propagates, ±inf lands in lo or hi
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or inf values; images must be finite, in [0, 1]")
    if lo < 0.0 or hi > 1.0:
        if lo >= 0.0 and hi <= 255.0:
            hint = "it looks like 0..255 pixels: divide by 255"
        else:
            hint = "it looks normalised (mean/std already applied)"
        raise ValueError(f"{name} has values in [{lo:.3g}, {hi:.3g}], outside [0, 1]; {hint}. {PIXEL_HINT}")
    return x


def check_labels(y: object, n: int, num_classes: int | None = None, name: str = "y") -> torch.Tensor:
    """Check that `y` is an int64 tensor of `n` class indices in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise TypeError(f"{name} has dtype {y.dtype}; expected torch.int64 class indices (y.long())")
    if y.shape != (n,):
        raise ValueError(f"{name} has shape {tuple(y.shape)}; expected ({n},), one label per image")
    if n and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        raise ValueError(
            f"{name} has labels in [{int(y.min())}, {int(y.max())}]; the model has "
            f"{num_classes} classes, so labels must lie in [0, {num_classes - 1}]"
        )
    return y


def parse_eps(eps: object, name: str = "eps", allow_zero: bool = True, limit: float = 1.0) -> float:
    """Parse a budget given as a number or a string such as ``"8/255"`` and check its range."""
    if isinstance(eps, str):
        try:
            value = float(Fraction(eps.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name}={eps!r} is not a number; write e.g. 0.03 or 8/255") from None
    elif isinstance(eps, (int, float)) and not isinstance(eps, bool):
        value = float(eps)
    else:
        raise TypeError(f"{name} must be a number or a string like '8/255', got {type(eps).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "> 0" if not allow_zero else ">= 0"
        raise ValueError(f"{name}={eps!r} is invalid; it must be finite and {need}")
    if value > limit:
        raise ValueError(
            f"{name}={eps!r} is larger than {limit:g}; budgets are in pixel units of [0, 1] images (8/255, not 8)"
        )
    return value


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; other names are checked (``cuda`` needs a GPU)."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here; use auto or cpu")
    return resolved


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def preserved_state(model: nn.Module, freeze: bool = True) -> Iterator[nn.Module]:
    """Restore every module's train/eval mode, `requires_grad` and `.grad` on exit.

    With ``freeze`` the parameters do not require gradients inside the block, so attacks
    back-propagate to the input only.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    try:
        if freeze:
            for p in params:
                p.requires_grad_(False)
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad


def gradient_reaches_input(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether autograd connects the model's output to its input, tried on ``x``'s first image.

    False for a forward pass cut off from autograd: rounding to integers, a comparison or a
    thresholded encoding, ``.detach()``, ``torch.no_grad()`` or a trip through numpy before the
    first layer. Call it with the model in the mode to test (its state is left as it is).
    """
    with torch.enable_grad():
        xi = x[:1].detach().to(model_device(model)).requires_grad_(True)
        out = model(xi)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return False
        (grad,) = torch.autograd.grad(out.sum(), xi, allow_unused=True)
    return grad is not None


def probe(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run the model on one image (eval mode, no grad, state restored) and return its output.

    A model that rejects the input's shape gives a ValueError naming the shape, not a
    traceback from deep inside a convolution.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with preserved_state(model), torch.no_grad():
        model.eval()
        try:
            return model(x[:1].to(model_device(model)))
        except RuntimeError as err:
            raise ValueError(
                f"the model cannot take input of shape {tuple(x.shape[1:])} (C×H×W): "
                f"{str(err).splitlines()[0]}; check the channel count and image size"
            ) from None


@contextlib.contextmanager
def shape_errors(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Around a model call on ``x``: a RuntimeError that one image reproduces becomes `probe`'s ValueError.

    The same clear message as probing first, without a one-image forward pass on every batch
    (for a CNN on the CPU that costs about an eighth of a 256-image pass). Other errors pass through.
    """
    try:
        yield
    except RuntimeError:
        probe(model, x)  # raises the ValueError naming the shape when the shape is the problem
        raise


def inspect_model(model: nn.Module, x: torch.Tensor) -> int:
    """Probe a classifier with one image and return its number of classes.

    Warns, once per model, when it seems to return probabilities instead of logits.
    """
    out = probe(model, x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError("the model must return logits of shape N×num_classes")
    if model not in _WARNED_PROBABILITIES and _looks_like_probabilities(out):
        _WARNED_PROBABILITIES.add(model)
        warnings.warn(
            "the model's outputs are non-negative and sum to 1: it seems to return probabilities. "
            "robustkit expects logits; remove the final softmax layer (the output_head check reports it)",
            RobustkitWarning,
            stacklevel=3,
        )
    return out.shape[1]


_WARNED_PROBABILITIES: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # each model is warned about once


def _looks_like_probabilities(logits: torch.Tensor) -> bool:
    sums = logits.sum(dim=1)
    return bool((logits >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-4))


def image_digests(x: torch.Tensor) -> list[bytes]:
    """One 8-byte hash per image of its pixels on the 0..255 grid, so the same image stored as float32 or
    decoded from uint8 (or off by float round-off) gets the same hash."""
    grid = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [hashlib.blake2b(image.tobytes(), digest_size=8).digest() for image in grid]
