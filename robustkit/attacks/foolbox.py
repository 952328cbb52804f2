"""foolbox adapters: DDN (decoupled direction and norm, L2) and PGD (L∞, L2)."""

from __future__ import annotations

from .base import Attack, require


def _run_foolbox(attack, model, x, y, target, eps):
    fb = require("foolbox")
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
    if target is None:
        criterion = fb.criteria.Misclassification(y)
    else:
        criterion = fb.criteria.TargetedMisclassification(target)
    _, clipped, _ = attack(fmodel, x, criterion, epsilons=eps)
    return clipped


class DDN(Attack):
    """foolbox.attacks.DDNAttack: the smallest L2 perturbation that succeeds (``eps`` caps it)."""

    name = "ddn"
    backend = "foolbox"
    norm = "l2"
    targeted = True
    defaults = {"eps": None, "steps": 100, "init_epsilon": 1.0, "gamma": 0.05}

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        return self.params["eps"] is not None

    def _run(self, model, x, y, target):
        fb = require("foolbox")
        p = self.params
        attack = fb.attacks.DDNAttack(init_epsilon=p["init_epsilon"], steps=p["steps"], gamma=p["gamma"])
        return _run_foolbox(attack, model, x, y, target, p["eps"])


class PGD(Attack):
    """foolbox.attacks.LinfPGD (random start); ``alpha=None`` means 2.5·eps/steps."""

    name = "pgd"
    backend = "foolbox"
    norm = "linf"
    targeted = True
    defaults = {"eps": 8 / 255, "alpha": None, "steps": 10, "random_start": True}
    attack_cls = "LinfPGD"

    def _run(self, model, x, y, target):
        fb = require("foolbox")
        p = self.params
        alpha = p["alpha"] if p["alpha"] is not None else 2.5 * p["eps"] / p["steps"]
        attack = getattr(fb.attacks, self.attack_cls)(
            abs_stepsize=alpha, steps=p["steps"], random_start=p["random_start"]
        )
        return _run_foolbox(attack, model, x, y, target, p["eps"])


class PGDL2(PGD):
    """foolbox.attacks.L2PGD (random start); ``alpha=None`` means 2.5·eps/steps."""

    name = "pgd_l2"
    norm = "l2"
    defaults = {"eps": 1.0, "alpha": None, "steps": 10, "random_start": True}
    attack_cls = "L2PGD"
