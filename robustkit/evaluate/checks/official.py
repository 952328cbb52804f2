"""The official AutoAttack's own flag checks (its ``flags_doc.md``), run and reported as robustkit checks.

The authors' code warns, through its logger, when a model looks randomised, returns probabilities,
computes gradients during its forward pass (a dynamic defense), has too few classes for the DLR
losses, has images with zero gradient, or when Square (gradient-free) breaks more than the gradient
attacks did. robustkit runs the same functions (``pyautoattack.checks``) and turns each message into
a warning check, so it reaches the report instead of scrolling past in a log. The messages are
collected by an object handed to the authors' functions as their ``logger``, not through Python's
logging, so a user's logging configuration (``logging.disable``, levels, filters) cannot hide them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ...core.backends import require
from ...core.checks import model_device, preserved_state
from ...core.papers import CROCE_2020
from .base import Check

FLAGS = {
    "randomized": "it seems to be a randomized defense",
    "probabilities": "output is a probability distribution",
    "dynamic": "dynamic defense",
    "classes": "classes",
    "zero_gradient": "zero gradient",
    "square": "Square Attack has decreased",
}
"""Each flag's name → a phrase of the authors' message that identifies it."""


class _Flags:
    """Stands in for the ``logger`` the authors' check functions take: they call ``logger.warning(msg)``
    for each flag, and this keeps the messages, whatever the process's logging configuration."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, msg: object, *args: object, **_: object) -> None:
        self.messages.append(str(msg) % args if args else str(msg))


def _flag_of(message: str) -> str:
    return next((name for name, phrase in FLAGS.items() if phrase in message), "other")


def autoattack_flags(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    components: Sequence[str],
    log: Sequence[dict[str, Any]] = (),
    clean_accuracy: float | None = None,
    randomized_ok: bool = False,
    target_classes: tuple[int, int] = (9, 9),
) -> list[Check]:
    """The official AutoAttack's flag checks on a sample ``x, y``, one check per flag raised.

    ``components`` are the authors' attack names (``apgd-ce``, ``apgd-t``, …) of the suite that ran;
    ``log`` its accuracy after each (`robust_accuracy`'s ``log``) with ``clean_accuracy``, for the
    Square check; ``randomized_ok`` skips the randomness check (version ``rand``), as the authors do;
    ``target_classes``: APGD-T's and FAB-T's, for the class-count check.
    With no flag raised, one passing check says which were run.

    Paper: Croce & Hein 2020, https://arxiv.org/abs/2003.01690 (flags_doc.md of its code)
    """
    checks_mod = require("pyautoattack.checks")
    device = model_device(model)
    xd, yd = x.to(device), y.to(device)
    ran = []
    logger = _Flags()
    with preserved_state(model):
        model.eval()

        def run(name: str, call: Callable[[], Any]) -> Any:
            ran.append(name)
            return call()

        checks_mod.funcs.update(dict.fromkeys(checks_mod.funcs, 0))  # the authors' call counter is global: reset it
        if not randomized_ok:
            run("randomized", lambda: checks_mod.check_randomized(model, xd, yd, bs=len(xd), logger=logger))
        n_cls = run("probabilities", lambda: checks_mod.check_range_output(model, xd, logger=logger))
        run("dynamic", lambda: checks_mod.check_dynamic(model, xd, False, logger=logger))
        apgd_t, fab_t = target_classes
        run("classes", lambda: checks_mod.check_n_classes(n_cls, list(components), apgd_t, fab_t, logger=logger))
        xg = xd.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(xg), yd)
            (grad,) = torch.autograd.grad(loss, xg)
        run("zero_gradient", lambda: checks_mod.check_zero_gradients(grad, logger=logger))
        if log and clean_accuracy is not None:
            accuracies = {"clean": clean_accuracy, **{row["attack"]: row["accuracy"] for row in log}}
            run("square", lambda: checks_mod.check_square_sr(accuracies, logger=logger))
    flags = logger.messages
    values = {"ran": ran, "n": len(x)}
    if not flags:
        detail = f"the official AutoAttack's flag checks ({', '.join(ran)}) raise nothing on {len(x)} images"
        return [Check("autoattack_flags", "pass", detail, values, CROCE_2020)]
    out = []
    for message in flags:
        flag = _flag_of(message)
        detail = f"the official AutoAttack flags: {message.replace(' See flags_doc.md for details.', '')}"
        out.append(Check(f"autoattack_flags ({flag})", "warn", detail, {**values, "flag": flag}, CROCE_2020))
    return out
