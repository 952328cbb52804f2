"""Model-contract checks: the model works and takes the input it is given.

Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
"""

from __future__ import annotations

import math

from ...core.papers import CARLINI_2019
from .base import Check, _check_n, _share

LEARNED_TOLERANCE_Z = 2.0  # "at chance": within 2 binomial standard errors of 1/num_classes


def model_learned(clean_accuracy: float, num_classes: int, n: int | None = None) -> Check:
    """Clean accuracy well above chance (Carlini et al. 2019, §4: evaluate a model that works).

    Fails at or below chance ``1/num_classes`` plus 2 binomial standard errors on ``n`` points
    (plus 0.01 when ``n`` is not given); warns below twice chance (below halfway from chance
    to 1 when there are fewer than 3 classes).

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    acc = _share("clean_accuracy", clean_accuracy)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an integer ≥ 2")
    chance = 1 / num_classes
    tolerance = 0.01 if n is None else LEARNED_TOLERANCE_Z * math.sqrt(chance * (1 - chance) / _check_n(n))
    warn_below = min(2 * chance, (1 + chance) / 2)
    values = {
        "clean_accuracy": acc,
        "chance": chance,
        "fail_at_or_below": chance + tolerance,
        "warn_below": warn_below,
        "n": n,
    }
    if acc <= chance + tolerance:
        status, detail = (
            "fail",
            (
                f"clean accuracy {acc:.1%} is at chance ({chance:.1%}): the model learned nothing (or labels or "
                "preprocessing are wrong), so its robustness numbers mean nothing; fix training first"
            ),
        )
    elif acc < warn_below:
        status, detail = (
            "warn",
            (
                f"clean accuracy {acc:.1%} is below {warn_below:.1%} (chance {chance:.1%}): the model barely learned; "
                "train it properly before trusting robust accuracy, which is bounded by clean accuracy"
            ),
        )
    else:
        status, detail = "pass", f"clean accuracy {acc:.1%} is well above chance ({chance:.1%})"
    return Check("model_learned", status, detail, values, CARLINI_2019)
