"""Sanity checks: every robustness and OOD number checks itself.

`diagnose` runs the checks that apply to a model, its data and an attack on a seeded sample
and returns a `Diagnosis`. Each check is also a public function of the numbers a recipe
already has (accuracies, an eps curve, a training history, OOD scores), so nothing needs
recomputing. A check returns a `Check`: ``status`` "pass", "warn" (suspicious: look before
you publish) or "fail" (the number is wrong as it stands), a one-sentence ``detail`` saying
what it means and what to do, and the ``values`` behind it.

Comparisons of two accuracies measured on ``n`` points allow for sampling noise: a
difference counts when it exceeds ``z`` binomial standard errors of the difference,
``z·sqrt(p1(1−p1)/n + p2(1−p2)/n)`` (at least ``z/(2n)``, i.e. one point for z = 2), with
z = 2 for "warn" (about 5% false alarms for one comparison by chance alone) and z = 4 for
"fail" (below 1 in 10 000). See `noise_tolerance`.

The checks come from Carlini et al. 2019 (the evaluation checklist), Pintor et al. 2022
(indicators of attack failure), Athalye, Carlini & Wagner 2018 (obfuscated gradients),
Carlini & Wagner 2016 (distillation's vanishing gradients) and Wong, Rice & Kolter 2020
(catastrophic overfitting).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..attacks.base import Attack, attack_batches
from ..attacks.reference import FGSM
from ..core.checks import check_images, check_labels, inspect_model, model_device, parse_eps, preserved_state
from ..core.papers import (
    ATHALYE_2018,
    CARLINI_2019,
    CARLINI_WAGNER_2016,
    HEIN_2019,
    HENDRYCKS_2022,
    PINTOR_2022,
    WONG_2020,
)
from ..core.params import jsonable
from ..defenses.training import overfitting_signs
from ..modelling.batches import labelled_batches, map_batches, slices
from ..modelling.data import Data, as_image_set
from ..registry import attack as make_attack
from .ood import OODResult
from .robustness import _predict, _rate

STATUSES = ("pass", "warn", "fail")
Z_WARN = 2.0  # standard errors of a difference that make a warning ...
Z_FAIL = 4.0  # ... and a failure

LEARNED_TOLERANCE_Z = 2.0  # "at chance": within 2 binomial standard errors of 1/num_classes
GRADIENT_WARN, GRADIENT_FAIL = 0.01, 0.10  # share of points with a zero / NaN / inf input gradient
UNBOUNDED_WARN, UNBOUNDED_FAIL = 0.02, 0.10  # accuracy left by the attack with its budget opened
STEPS_WARN, STEPS_FAIL = 0.01, 0.05  # robust-accuracy drop when the steps double (and 2 / 4 points)
RANDOMISED = 1e-4  # relative change of the logits between two identical calls
DEFENSE_COST = 0.10  # clean-accuracy drop a defense may cost
SATURATED = 0.10  # share of OOD scores tied with another score

CHECKS = (
    "model_learned",
    "gradients_available",
    "unstable_predictions",
    "defense_cost",
    "unbounded_attack",
    "monotone_in_eps",
    "iterative_vs_single_step",
    "incomplete_optimisation",
    "adaptive_vs_oblivious",
)
"""The checks `diagnose` can run, in the order it runs them."""


@dataclass
class Check:
    """One sanity check: ``status`` is "pass", "warn" or "fail"; ``detail`` says what it means
    and what to do; ``values`` holds the numbers behind it; ``paper`` where it comes from."""

    name: str
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    paper: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name}: status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "values": {k: jsonable(v) for k, v in self.values.items()},
            "paper": self.paper,
        }

    def __str__(self) -> str:
        return f"[{self.status}] {self.name}: {self.detail}"


@dataclass
class Diagnosis:
    """The checks `diagnose` ran, the ones it skipped (name → why), and what they cost.

    ``ok`` is True when no check warns or fails. ``cost`` holds the wall seconds of the whole
    diagnosis, of one run of the attack on the sample, their ratio and the number of attack
    runs (``attack_runs``, in whole-sample units). ``measured`` holds the
    accuracies it measured on the sample (clean, under the attack, ...).
    """

    checks: list[Check]
    skipped: dict[str, str] = field(default_factory=dict)
    sample: int = 0
    measured: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        """The checks that warn or fail."""
        return [c for c in self.checks if not c.ok]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        why = self.skipped.get(name)
        raise KeyError(f"no check {name!r} ran" + (f": {why}" if why else f"; ran: {', '.join(self.names)}"))

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.checks)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for results.json."""
        return {
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
            "skipped": dict(self.skipped),
            "sample": self.sample,
            "measured": {k: jsonable(v) for k, v in self.measured.items()},
            "cost": dict(self.cost),
        }

    def markdown(self) -> str:
        """A Markdown table of the checks (status, name, detail), for reports."""
        rows = ["| status | check | what it means |", "|---|---|---|"]
        rows += [f"| {c.status} | {c.name} | {c.detail.replace('|', '/')} |" for c in self.checks]
        return "\n".join(rows)

    def __str__(self) -> str:
        head = f"diagnosis on {self.sample} points: {'ok' if self.ok else f'{len(self.problems)} problem(s)'}"
        return "\n".join([head, *map(str, self.checks)])


def noise_tolerance(p1: float, p2: float, n: int, z: float = Z_WARN) -> float:
    """How far two accuracies on ``n`` points each may differ by sampling noise alone.

    ``z`` binomial standard errors of the difference, ``z·sqrt((p1(1−p1) + p2(1−p2))/n)``, and
    at least ``z/(2n)`` (one point for z = 2) so that accuracies of 0 or 1 still allow a point.
    Treating the two as independent is conservative for accuracies measured on the same points.
    """
    _check_n(n)
    return max(z * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n), z / (2 * n))


# ---------------------------------------------------------------- checks on numbers


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


def monotone_in_eps(eps_list: Sequence[float | str], accuracies: Sequence[float], n: int) -> Check:
    """Accuracy must not rise with eps beyond sampling noise (Carlini et al. 2019, §5.2).

    A larger budget contains every perturbation of a smaller one, so a correct attack can only
    lower accuracy. Each accuracy is compared with the lowest one at any smaller eps; a rise
    beyond `noise_tolerance` (z = 2) warns, beyond z = 4 fails. ``n``: points per accuracy.

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    eps = [parse_eps(e, limit=math.inf) for e in eps_list]
    accs = [_share("accuracy", a) for a in accuracies]
    if len(eps) != len(accs) or len(eps) < 2:
        raise ValueError(f"monotone_in_eps needs ≥ 2 eps values and one accuracy each; got {len(eps)} and {len(accs)}")
    _check_n(n)
    order = sorted(range(len(eps)), key=lambda i: eps[i])
    eps, accs = [eps[i] for i in order], [accs[i] for i in order]
    rises = []  # (excess over the tolerance, i_low, j_high, rise, tolerance, beyond the fail tolerance)
    low = 0  # the index of the lowest accuracy so far
    for j in range(1, len(eps)):
        if eps[j] > eps[low] and accs[j] > accs[low]:
            rise = accs[j] - accs[low]
            tol = noise_tolerance(accs[low], accs[j], n)
            if rise > tol:
                rises.append((rise - tol, low, j, rise, tol, rise > noise_tolerance(accs[low], accs[j], n, Z_FAIL)))
        if accs[j] < accs[low]:
            low = j
    values = {"eps": eps, "accuracy": accs, "n": n}
    if not rises:
        detail = (
            f"accuracy does not rise with eps beyond sampling noise over eps {_fmt_eps(eps[0])}..{_fmt_eps(eps[-1])}"
        )
        return Check("monotone_in_eps", "pass", detail, values, CARLINI_2019)
    _, i, j, rise, tol, _ = max(rises)
    status = "fail" if any(r[-1] for r in rises) else "warn"
    values.update(rise=rise, tolerance=tol, from_eps=eps[i], to_eps=eps[j])
    detail = (
        f"accuracy rises from {accs[i]:.1%} at eps={_fmt_eps(eps[i])} to {accs[j]:.1%} at eps={_fmt_eps(eps[j])}, "
        f"beyond sampling noise (±{tol:.1%}): a larger budget cannot make a model more robust, so the attack fails "
        "at some budgets (step size, too few steps, masked gradients); tune it until the curve falls"
    )
    return Check("monotone_in_eps", status, detail, values, CARLINI_2019)


def iterative_vs_single_step(pgd_accuracy: float, fgsm_accuracy: float, n: int) -> Check:
    """An iterative attack (PGD) must not leave more accuracy than single-step FGSM at the same eps.

    PGD's first step can be FGSM's, so leaving more accuracy beyond `noise_tolerance` (z = 2:
    warn, z = 4: fail) means the iterative attack is failing (Carlini et al. 2019, §5.2:
    "iterative attacks should be stronger than single-step attacks").

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    return _not_above(
        "iterative_vs_single_step", pgd_accuracy, fgsm_accuracy, n, ("pgd_accuracy", "fgsm_accuracy"),
        "the iterative attack leaves {worse:.1%} accuracy but single-step FGSM only {better:.1%} at the same eps "
        "(noise ±{tol:.1%}): an iterative attack weaker than one step is failing (step size, masked gradients); "
        "fix it and report the lower number",
        "the iterative attack ({worse:.1%}) is at least as strong as single-step FGSM ({better:.1%})",
        CARLINI_2019,
    )  # fmt: skip


def adaptive_vs_oblivious(adaptive_accuracy: float, oblivious_accuracy: float, n: int) -> Check:
    """An adaptive attack on the whole defense must not be weaker than an oblivious one.

    The oblivious attack is crafted on the undefended model and tested on the defended one;
    the adaptive attack (through the defense, with BPDA or EOT where it is not differentiable
    or random) sees strictly more. Leaving more accuracy beyond `noise_tolerance` (z = 2:
    warn, z = 4: fail) means the defense masks the adaptive attack's gradients.

    Paper: Athalye, Carlini & Wagner 2018, Obfuscated Gradients Give a False Sense of Security, https://arxiv.org/abs/1802.00420
    """
    return _not_above(
        "adaptive_vs_oblivious", adaptive_accuracy, oblivious_accuracy, n, ("adaptive_accuracy", "oblivious_accuracy"),
        "the adaptive attack leaves {worse:.1%} accuracy, more than the oblivious one crafted on the undefended model "
        "({better:.1%}, noise ±{tol:.1%}): the defense masks gradients; attack through it with BPDA (non-differentiable "
        "steps) or EOT (randomness) and report the lower number",
        "the adaptive attack ({worse:.1%}) is at least as strong as the oblivious one ({better:.1%})",
        ATHALYE_2018,
    )  # fmt: skip


def defense_cost(undefended_clean: float, defended_clean: float, threshold: float = DEFENSE_COST) -> Check:
    """Clean accuracy a defense costs: a drop above ``threshold`` (default 0.10) warns.

    Robust accuracy alone can hide a defense that ruins the model; report both (Carlini et al. 2019, §3).

    Paper: Carlini et al. 2019, On Evaluating Adversarial Robustness, https://arxiv.org/abs/1902.06705
    """
    before, after = _share("undefended_clean", undefended_clean), _share("defended_clean", defended_clean)
    drop = before - after
    values = {"undefended_clean": before, "defended_clean": after, "drop": drop, "threshold": threshold}
    if drop > threshold:
        detail = (
            f"the defense costs {drop:.1%} clean accuracy ({before:.1%} → {after:.1%}), above {threshold:.0%}: "
            "report it next to robust accuracy and weigh the trade-off (or tune the defense's strength)"
        )
        return Check("defense_cost", "warn", detail, values, CARLINI_2019)
    detail = (
        f"the defense costs {drop:.1%} clean accuracy ({before:.1%} → {after:.1%}), within {threshold:.0%}"
        if drop >= 0
        else f"the defense costs no clean accuracy ({before:.1%} → {after:.1%})"
    )
    return Check("defense_cost", "pass", detail, values, CARLINI_2019)


def catastrophic_overfitting(history: Sequence[dict[str, float]]) -> Check:
    """PGD accuracy collapsing while FGSM accuracy holds, in an adversarial-training history.

    Takes ``AdversarialTraining.history`` (rows with ``monitor_fgsm`` and ``monitor_pgd`` at the
    training eps) and applies `robustkit.defenses.training.overfitting_signs`, the rules behind
    ``AdversarialTraining.catastrophic_overfitting``: at the last epoch PGD ≤ ½·FGSM and at least
    0.10 below it (at any accuracy level: PGD 0.00 with FGSM 0.46 counts), or PGD below half its
    best epoch and at least 0.05 below it while FGSM keeps 80% of its best. Either warns.

    Paper: Wong, Rice & Kolter 2020, Fast is better than free: Revisiting adversarial training, https://arxiv.org/abs/2001.03994
    """
    signs = overfitting_signs(list(history))
    if signs is None:
        raise ValueError(
            "catastrophic_overfitting needs history rows with monitor_fgsm and monitor_pgd; "
            "train with adversarial_training(monitor=<held-out ImageSet>)"
        )
    values = dict(signs)
    pgd, fgsm = signs["last_pgd"], signs["last_fgsm"]
    if signs["collapsed"]:
        since = f" since epoch {signs['epoch']}" if signs["epoch"] else ""
        detail = (
            f"catastrophic overfitting{since}: PGD accuracy is {pgd:.1%} while FGSM reads {fgsm:.1%} at the training "
            "eps, so the model only learned to defeat FGSM; train FGSM from a random start with a step of about "
            "1.25·eps (Wong et al.), stop early on PGD accuracy, or train with PGD"
        )
        return Check("catastrophic_overfitting", "warn", detail, values, WONG_2020)
    detail = f"no catastrophic overfitting: at the last epoch PGD accuracy is {pgd:.1%}, FGSM {fgsm:.1%}"
    return Check("catastrophic_overfitting", "pass", detail, values, WONG_2020)


def ood_auroc(metrics: float | dict[str, float] | OODResult) -> Check:
    """OOD AUROC below 0.5 warns: the score ranks ID images as more anomalous than OOD ones.

    Takes an AUROC, an `ood_metrics` dict or an `OODResult`. Below 0.5 the detector is worse
    than a coin: a sign flip (scores must be higher for OOD), or a model more confident on these
    OOD images than on its own test images, as ReLU networks can be far from their training data.

    Paper: Hein, Andriushchenko & Bitterwolf 2019, https://arxiv.org/abs/1812.05720
    """
    if isinstance(metrics, OODResult):
        metrics = metrics.metrics
    auroc = _share("AUROC", metrics["AUROC"] if isinstance(metrics, dict) else metrics)
    values = {"AUROC": auroc}
    if auroc < 0.5:
        detail = (
            f"AUROC {auroc:.3f} < 0.5: the score ranks ID as more anomalous than OOD: a sign flip (higher scores "
            "must mean more OOD), or a model more confident on these OOD images than on its own test images, as "
            "ReLU networks can be far from their data (noise images often do this); check the sign, then the score "
            "histograms, and compare training seeds"
        )
        return Check("ood_auroc", "warn", detail, values, HEIN_2019)
    return Check(
        "ood_auroc",
        "pass",
        f"AUROC {auroc:.3f} ≥ 0.5: the score ranks OOD above ID more often than not",
        values,
        HEIN_2019,
    )


def ood_saturated(
    id_scores: Sequence[float] | np.ndarray, ood_scores: Sequence[float] | np.ndarray, threshold: float = SATURATED
) -> Check:
    """Tied OOD scores: more than ``threshold`` (default 10%) of all scores equal to another score warns.

    A saturated score (softmax at exactly 1.0 for confident images) cannot rank the tied images,
    so AUROC and FPR@95 depend on how ties are broken. Continuous scores almost never tie.

    Paper: Hendrycks et al. 2022 (max logit instead of a saturating max softmax), https://arxiv.org/abs/1911.11132
    """
    id_s, ood_s = np.asarray(id_scores, dtype=np.float64).ravel(), np.asarray(ood_scores, dtype=np.float64).ravel()
    scores = np.concatenate([id_s, ood_s])
    if len(id_s) == 0 or len(ood_s) == 0:
        raise ValueError("ood_saturated needs at least one ID and one OOD score")
    values_, counts = np.unique(scores, return_counts=True)
    tied = float(counts[counts > 1].sum() / len(scores))
    top = int(counts.argmax())
    mode_value, mode_share = float(values_[top]), float(counts[top] / len(scores))
    values = {
        "tied_share": tied,
        "mode_value": mode_value,
        "mode_share": mode_share,
        "id_at_mode": float(np.mean(id_s == mode_value)),
        "ood_at_mode": float(np.mean(ood_s == mode_value)),
        "threshold": threshold,
    }
    if tied > threshold:
        detail = (
            f"{tied:.0%} of the scores tie ({mode_share:.0%} equal {mode_value:.6g}): the score is saturated (e.g. "
            "softmax at 1.0), so ties decide the ranking; use max_logit or energy, or a temperature"
        )
        return Check("ood_saturated", "warn", detail, values, HENDRYCKS_2022)
    return Check(
        "ood_saturated", "pass", f"{tied:.1%} of the scores tie (within {threshold:.0%})", values, HENDRYCKS_2022
    )


# ---------------------------------------------------------------- checks that run the model


def gradients_available(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> Check:
    """Share of points whose cross-entropy input gradient is exactly 0, or NaN, or inf.

    Such points cannot be moved by a gradient attack, which then reports them as robust: a
    rounding or quantising input layer (shattered gradients, Athalye et al. 2018), or a
    saturated softmax whose float32 gradient underflows to 0, as in defensive distillation
    used at temperature 1 (Carlini & Wagner 2016; on digits a distilled model had 57% of
    points with exactly zero gradient). Pintor et al.'s "unavailable gradients" indicator.
    Warns above 1% of the points, fails above 10%. Cost: one forward and one backward pass.

    Papers: Carlini & Wagner 2016, https://arxiv.org/abs/1607.04311; Athalye, Carlini & Wagner
    2018, https://arxiv.org/abs/1802.00420; Pintor et al. 2022, https://arxiv.org/abs/2106.09947
    """
    check_images(x)
    check_labels(y, len(x), inspect_model(model, x))
    device = model_device(model)
    zero, bad, norms = [], [], []
    with preserved_state(model):
        model.eval()
        for s in slices(len(x), batch_size):
            xb = x[s].detach().to(device).requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[s].to(device), reduction="sum")  # per-point gradients
            grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
            grad = (torch.zeros_like(xb) if grad is None else grad).flatten(1)  # None: a cut graph, no gradient
            zero.append((grad == 0).all(1).cpu())
            bad.append((~torch.isfinite(grad)).any(1).cpu())
            norms.append(grad.double().norm(dim=1).cpu())
    zero_t, bad_t, norm_t = torch.cat(zero), torch.cat(bad), torch.cat(norms)
    share_zero, share_nonfinite = _rate(zero_t), _rate(bad_t)
    share = _rate(zero_t | bad_t)
    finite = norm_t[torch.isfinite(norm_t)]
    values = {
        "share": share,
        "share_zero": share_zero,
        "share_nonfinite": share_nonfinite,
        "median_norm": float(finite.median()) if len(finite) else float("nan"),
        "n": len(x),
    }
    papers = f"{CARLINI_WAGNER_2016}; {ATHALYE_2018}; {PINTOR_2022}"
    if share > GRADIENT_WARN:
        status = "fail" if share > GRADIENT_FAIL else "warn"
        detail = (
            f"{share:.1%} of points have a zero ({share_zero:.1%}) or NaN/inf ({share_nonfinite:.1%}) input gradient "
            "(a rounding or quantising layer, or a saturated softmax as in distillation): gradient attacks cannot move "
            "them, so robust accuracy is overstated; attack with BPDA, a margin loss on logits (a distilled model: "
            "through TemperatureScaled), or a gradient-free attack"
        )
        return Check("gradients_available", status, detail, values, papers)
    detail = f"{share:.1%} of points have a zero or non-finite input gradient: gradient attacks have a direction"
    return Check("gradients_available", "pass", detail, values, papers)


def unbounded_attack(
    attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> Check:
    """The same attack with its budget opened must bring accuracy to ~0.

    L∞ attacks run at eps = 1 (any image reachable), L2 attacks at eps = sqrt(C·H·W) (the
    diagonal of the pixel cube), attacks without a bound as they are; an explicit step size
    ``alpha`` scales with the budget. Accuracy left above 2% warns, above 10% fails: the attack,
    not the model, is failing (masked gradients, a bug, a step size that cannot reach).
    Pintor et al.'s "unconstrained attack failure". Cost: one run of the attack.

    Papers: Carlini et al. 2019, https://arxiv.org/abs/1902.06705; Pintor et al. 2022, https://arxiv.org/abs/2106.09947
    """
    check_images(x)
    check_labels(y, len(x), inspect_model(model, x))
    opened, budget = _opened(attack, x)
    adv = attack_batches(opened, model, x, y, batch_size=batch_size)
    return _judge_unbounded(_rate(_predict(model, adv) == y.cpu()), len(x), budget, attack)


def incomplete_optimisation(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor | None = None,
    batch_size: int = 256,
) -> Check:
    """Doubling an iterative attack's ``steps`` must not lower robust accuracy noticeably.

    Runs the attack with 2×``steps`` (other parameters as given; a default step size follows
    the steps) on the points that survived the attack (``x_adv``: its output, when already
    computed). Robust accuracy dropping by more than 1% and more than 2 points warns, by more
    than 5% and more than 4 points fails: the attack had not converged. Pintor et al.'s
    "incomplete optimization". Cost: at most twice the attack, on its survivors only.

    Papers: Pintor et al. 2022, https://arxiv.org/abs/2106.09947; Carlini et al. 2019, https://arxiv.org/abs/1902.06705
    """
    if "steps" not in attack.params:
        raise ValueError(f"incomplete_optimisation needs an iterative attack with steps; {attack.label()} has none")
    check_images(x)
    check_labels(y, len(x), inspect_model(model, x))
    if x_adv is None:
        x_adv = attack_batches(attack, model, x, y, batch_size=batch_size)
    n, steps = len(x), attack.params["steps"]
    survived = _predict(model, x_adv) == y.cpu()
    idx = survived.nonzero().flatten()
    still = 0
    if len(idx):
        more = attack.with_params(steps=2 * steps)
        xi, yi = x[idx.to(x.device)], y[idx.to(y.device)]
        still = int((_predict(model, attack_batches(more, model, xi, yi, batch_size=batch_size)) == yi.cpu()).sum())
    before, after = len(idx) / n, still / n
    drop = before - after
    warn_at, fail_at = max(STEPS_WARN, 2 / n), max(STEPS_FAIL, 4 / n)
    values = {
        "steps": steps,
        "accuracy": before,
        "accuracy_2x_steps": after,
        "drop": drop,
        "warn_above": warn_at,
        "fail_above": fail_at,
        "n": n,
    }
    papers = f"{PINTOR_2022}; {CARLINI_2019}"
    if drop > warn_at:
        detail = (
            f"doubling the steps ({steps} → {2 * steps}) lowers robust accuracy from {before:.1%} to {after:.1%}: "
            "the attack had not converged; raise steps (or the step size) until the number stops moving"
        )
        return Check("incomplete_optimisation", "fail" if drop > fail_at else "warn", detail, values, papers)
    detail = f"doubling the steps ({steps} → {2 * steps}) changes robust accuracy by {drop:.1%} (within {warn_at:.1%})"
    return Check("incomplete_optimisation", "pass", detail, values, papers)


def unstable_predictions(model: nn.Module, x: torch.Tensor, repeats: int = 2, batch_size: int = 512) -> Check:
    """A randomised model (fresh noise at every call) gives different outputs for the same input.

    Calls the model ``repeats`` times (eval mode) and warns when the logits change by more than
    1e-4 of their scale (floating-point nondeterminism stays far below): a single gradient of a
    randomised model is a noisy sample, so attack it with EOT (average gradients over many
    draws) and report accuracy over several draws. Related to Pintor et al.'s "unstable
    predictions". Cost: ``repeats`` forward passes.

    Papers: Athalye, Carlini & Wagner 2018 (EOT), https://arxiv.org/abs/1802.00420; Pintor et al. 2022, https://arxiv.org/abs/2106.09947
    """
    check_images(x)
    inspect_model(model, x)
    if not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats={repeats!r} must be an integer ≥ 2")
    with preserved_state(model), torch.no_grad():
        model.eval()
        outs = [map_batches(model, x, batch_size, model_device(model)).double() for _ in range(repeats)]
    scale = max(float(outs[0].abs().max()), 1e-12)
    change = max(float((o - outs[0]).abs().max()) for o in outs[1:])
    preds = [o.argmax(1) for o in outs]
    changed = torch.zeros(len(x), dtype=torch.bool)
    for p in preds[1:]:
        changed |= p != preds[0]
    values = {
        "relative_change": change / scale,
        "max_logit_change": change,
        "share_changed": _rate(changed),
        "repeats": repeats,
    }
    papers = f"{ATHALYE_2018}; {PINTOR_2022}"
    if change / scale > RANDOMISED:
        detail = (
            f"repeated calls on the same inputs give different logits (predictions changed on {_rate(changed):.1%} of "
            "points): the model is randomised; attack it with EOT (gradients averaged over draws) and report accuracy "
            "over several draws"
        )
        return Check("unstable_predictions", "warn", detail, values, papers)
    return Check(
        "unstable_predictions",
        "pass",
        "repeated calls give the same outputs: the model is deterministic",
        values,
        papers,
    )


# ---------------------------------------------------------------- diagnose


def diagnose(
    model: nn.Module,
    data: Data,
    attack: Attack | str | None = None,
    eps: float | str | None = None,
    defense_of: nn.Module | None = None,
    sample: int | None = 256,
    seed: int = 0,
    skip: Sequence[str] = (),
    batch_size: int = 256,
) -> Diagnosis:
    """Run the sanity checks that apply to ``model`` on a seeded sample of ``data``.

    ``data``: an ImageSet, a DataLoader/Dataset or an ``(x, y)`` pair; ``sample`` points are
    drawn from it with ``seed`` (all of them for ``None`` or a smaller set). ``attack``: an
    Attack or a registry name; ``eps`` overrides its budget. ``defense_of``: the undefended
    model when ``model`` is a defended one. ``skip``: names of checks not to run.

    Always: `model_learned` (1 forward pass), `gradients_available` (1 forward + 1 backward),
    `unstable_predictions` (2 forward); with ``defense_of``: `defense_cost` (1 forward).
    With an attack (A = one run of it on the sample, the unit of ``cost["ratio"]``):

    - the attack at eps itself (1 A: robust accuracy, and the time ``cost["ratio"]`` divides by);
    - `unbounded_attack`: the attack with its budget opened (1 A);
    - `monotone_in_eps` over eps · (0, ½, 1, 2) and the opened budget (2 A more: ½ and 2);
    - `iterative_vs_single_step` for L∞ attacks other than FGSM (1 forward + 1 backward);
    - `incomplete_optimisation` for attacks with ``steps``: 2×steps on the survivors (≤ 2 A);
    - `adaptive_vs_oblivious` with ``defense_of``: the attack crafted on it (1 A).

    So at most 6 A (7 A with ``defense_of``) plus about one A of forward and backward passes
    for PGD-10. Measured on digits (PGD-10 at 8/255, 256 points, 94% of them surviving, 2
    loaded CPU cores): 5.9 attack runs and 6.9× the attack's own wall time (benchmarks/bench.py,
    ``bench_diagnose``); fewer survivors make the doubled-steps rerun cheaper. For a cheap
    attack such as FGSM the fixed forward passes dominate and the ratio is higher.
    ``Diagnosis.cost`` reports each call's seconds, the seconds of one attack run, their ratio,
    and ``attack_runs``: the attack runs it made, counted in runs over the whole sample.
    """
    start = time.perf_counter()
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError(f"skip: unknown checks {', '.join(unknown)}; valid names: {', '.join(CHECKS)}")
    x, y = _sample_data(data, sample, seed)
    check_images(x)
    num_classes = inspect_model(model, x)
    check_labels(y, len(x), num_classes)
    n = len(x)
    checks: list[Check] = []
    skipped: dict[str, str] = {name: "skipped by the caller (skip=)" for name in skip}

    def wanted(name: str, why_not: str | None = None) -> bool:
        if name in skipped:
            return False
        if why_not:
            skipped[name] = why_not
            return False
        return True

    def acc_of(adv: torch.Tensor, on: nn.Module = model) -> float:
        return _rate(_predict(on, adv, batch_size) == y.cpu())

    clean = acc_of(x)
    measured: dict[str, Any] = {"clean_accuracy": clean, "num_classes": num_classes}
    if wanted("model_learned"):
        checks.append(model_learned(clean, num_classes, n))
    if wanted("gradients_available"):
        checks.append(gradients_available(model, x, y, batch_size))
    if wanted("unstable_predictions"):
        checks.append(unstable_predictions(model, x, batch_size=batch_size))
    if wanted("defense_cost", None if defense_of is not None else "needs defense_of= (the undefended model)"):
        undefended = acc_of(x, defense_of)
        measured["undefended_clean_accuracy"] = undefended
        checks.append(defense_cost(undefended, clean))

    attack_seconds, runs = None, 0.0  # runs: attack runs on the whole sample, survivors counted pro rata
    if attack is None:
        for name in CHECKS[4:]:
            wanted(name, "needs attack=")
    else:
        attack = make_attack(attack) if isinstance(attack, str) else attack
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an Attack or an attack name, got {type(attack).__name__}")
        if eps is not None:
            attack = _at_eps(attack, parse_eps(eps, limit=math.inf))
        t0 = time.perf_counter()
        adv = attack_batches(attack, model, x, y, batch_size=batch_size)
        attack_seconds = time.perf_counter() - t0
        runs += 1
        robust = acc_of(adv)
        measured.update(attack=attack.describe(), robust_accuracy=robust)
        opened, budget = _opened(attack, x)
        bounded_eps = attack.eps if attack.bounded else None
        unbounded_acc = 0.0
        if "unbounded_attack" not in skipped or ("monotone_in_eps" not in skipped and bounded_eps and budget):
            unbounded_acc = acc_of(attack_batches(opened, model, x, y, batch_size=batch_size))
            runs += 1
            measured["unbounded_accuracy"] = unbounded_acc
        if wanted("unbounded_attack"):
            checks.append(_judge_unbounded(unbounded_acc, n, budget, attack))
        why = None if bounded_eps else f"{attack.label()} has no budget to vary (unbounded or eps 0)"
        if wanted("monotone_in_eps", why):
            grid = [(0.0, clean), (bounded_eps, robust)]
            for factor in (0.5, 2.0):
                e = bounded_eps * factor
                if budget is None or e < budget:
                    grid.append((e, acc_of(attack_batches(_at_eps(attack, e), model, x, y, batch_size=batch_size))))
                    runs += 1
            if budget is not None:
                grid.append((budget, unbounded_acc))
            grid.sort()
            measured["eps_curve"] = {"eps": [g[0] for g in grid], "accuracy": [g[1] for g in grid]}
            checks.append(monotone_in_eps([g[0] for g in grid], [g[1] for g in grid], n))
        why = None
        if attack.norm != "linf" or not bounded_eps:
            why = f"needs a bounded L∞ attack; {attack.label()} is {attack.norm}{'' if bounded_eps else ', unbounded'}"
        elif attack.name == "fgsm":
            why = "the attack is single-step FGSM itself"
        if wanted("iterative_vs_single_step", why):
            fgsm = acc_of(attack_batches(FGSM(eps=bounded_eps), model, x, y, batch_size=batch_size))
            measured["fgsm_accuracy"] = fgsm
            checks.append(iterative_vs_single_step(robust, fgsm, n))
        why = None if "steps" in attack.params else f"{attack.label()} has no steps parameter"
        if wanted("incomplete_optimisation", why):
            checks.append(incomplete_optimisation(attack, model, x, y, x_adv=adv, batch_size=batch_size))
            runs += 2 * robust  # twice the steps, on the points that survived
        if wanted(
            "adaptive_vs_oblivious", None if defense_of is not None else "needs defense_of= (the undefended model)"
        ):
            oblivious = acc_of(attack_batches(attack, defense_of, x, y, batch_size=batch_size))
            runs += 1
            measured["oblivious_accuracy"] = oblivious
            checks.append(adaptive_vs_oblivious(robust, oblivious, n))
    seconds = time.perf_counter() - start
    cost = {"seconds": seconds}
    if attack_seconds is not None:
        cost.update(attack_seconds=attack_seconds, ratio=seconds / max(attack_seconds, 1e-9), attack_runs=runs)
    order = {name: i for i, name in enumerate(CHECKS)}
    skipped = dict(sorted(skipped.items(), key=lambda kv: order[kv[0]]))
    return Diagnosis(checks, skipped, n, measured, cost)


# ---------------------------------------------------------------- helpers


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be the number of points, an integer ≥ 1")
    return n


def _share(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} must lie in [0, 1] (a fraction, not a percentage)")
    return value


def _fmt_eps(eps: float | None) -> str:
    if eps is None:
        return "unbounded"
    k = eps * 255
    if 0 < eps < 1 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:.4g}"


def _not_above(
    name: str, worse: float, better: float, n: int, keys: tuple[str, str], warn_text: str, pass_text: str, paper: str
) -> Check:
    """Warn (fail) when ``worse`` exceeds ``better`` by more than 2 (4) standard errors."""
    worse, better = _share(keys[0], worse), _share(keys[1], better)
    tol, tol_fail = noise_tolerance(worse, better, n), noise_tolerance(worse, better, n, Z_FAIL)
    excess = worse - better
    values = {keys[0]: worse, keys[1]: better, "excess": excess, "tolerance": tol, "fail_tolerance": tol_fail, "n": n}
    if excess > tol:
        status = "fail" if excess > tol_fail else "warn"
        return Check(name, status, warn_text.format(worse=worse, better=better, tol=tol), values, paper)
    return Check(name, "pass", pass_text.format(worse=worse, better=better, tol=tol), values, paper)


def _at_eps(attack: Attack, eps: float | None) -> Attack:
    """The attack at another budget; an explicit step size ``alpha`` scales with it."""
    changes: dict[str, Any] = {"eps": eps}
    alpha = attack.params.get("alpha")
    if alpha is not None and attack.eps and eps:
        changes["alpha"] = alpha * eps / attack.eps
    return attack.with_params(**changes)


def _opened(attack: Attack, x: torch.Tensor) -> tuple[Attack, float | None]:
    """The attack with its budget opened, and that budget (``None``: no bound)."""
    if not attack.bounded:
        return attack, None
    eps_param = next(p for p in attack.declared() if p.name == "eps")
    if eps_param.optional:
        return _at_eps(attack, None), None
    if attack.norm == "linf":
        return _at_eps(attack, 1.0), 1.0
    budget = min(math.sqrt(x[0].numel()), eps_param.high or math.inf)
    return _at_eps(attack, budget), budget


def _judge_unbounded(accuracy: float, n: int, budget: float | None, attack: Attack) -> Check:
    values = {"accuracy": accuracy, "budget": budget, "attack": attack.label(), "n": n}
    papers = f"{CARLINI_2019}; {PINTOR_2022}"
    opened = f"eps={_fmt_eps(budget)}" if budget is not None else "no bound"
    if accuracy > UNBOUNDED_WARN:
        detail = (
            f"with its budget opened ({opened}) the attack still leaves {accuracy:.1%} accuracy where ~0% is reachable: "
            "the attack is failing (masked gradients, a bug, too small steps), not the model being robust; fix the "
            "attack before reporting robust accuracy"
        )
        return Check("unbounded_attack", "fail" if accuracy > UNBOUNDED_FAIL else "warn", detail, values, papers)
    detail = (
        f"with its budget opened ({opened}) the attack reaches {accuracy:.1%} accuracy: it finds adversarial examples"
    )
    return Check("unbounded_attack", "pass", detail, values, papers)


def _sample_data(data: Data, sample: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded sample of any data robustkit takes; a Dataset or DataLoader is streamed and only
    the sampled rows are kept (a shuffled loader gives another, equally random, sample)."""
    if isinstance(data, (DataLoader, Dataset)) and sample is not None:
        total = len(data.dataset if isinstance(data, DataLoader) else data)  # type: ignore[arg-type]
        if isinstance(sample, int) and not isinstance(sample, bool) and 0 < sample < total:
            keep = set(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:sample].tolist())
            xs, ys, offset = [], [], 0
            for xb, yb in labelled_batches(data, None, 256):
                rows = [i for i in range(len(xb)) if offset + i in keep]
                xs.append(xb[rows])
                ys.append(yb[rows])
                offset += len(xb)
            return torch.cat(xs), torch.cat(ys)
    data = as_image_set(data)
    return _sample(data.x, data.y, sample, seed)


def _sample(x: torch.Tensor, y: torch.Tensor, sample: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``sample`` points drawn without replacement with ``seed`` (kept in their original order)."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise ValueError(f"sample={sample!r} must be a positive integer (or None for all points)")
    if sample is None or sample >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:sample].sort().values
    return x[idx.to(x.device)], y[idx.to(y.device)]
