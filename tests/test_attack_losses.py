"""The attacks the sanity checks use: PGD's margin and DLR losses, EOT-PGD, Square, and seeds drawn from the global RNG."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchattacks

import robustkit as rk
from robustkit.attacks.losses import dlr_loss, margin_loss
from robustkit.evaluate import accuracy, attack_batches, predict, random_targets


class Sigmoid(torch.nn.Module):
    """The model's logits through a sigmoid: the same argmax, saturated gradients."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.sigmoid(self.model(x))


class Dropout(torch.nn.Module):
    """Each input pixel zeroed with probability ``p`` inside forward, a fresh mask from the global RNG each pass."""

    def __init__(self, model, p):
        super().__init__()
        self.model, self.p = model, p

    def forward(self, x):
        return self.model(x * (torch.rand_like(x) > self.p).to(x.dtype))


def _logits(n=40, c=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


def test_margin_matches_hand_computation():
    z, y = _logits()
    t = (y + 1 + torch.randint(0, 9, y.shape, generator=torch.Generator().manual_seed(1))) % 10
    for i in range(len(z)):
        others = [z[i, j] for j in range(10) if j != y[i]]
        assert margin_loss(z[i : i + 1], y[i : i + 1]).item() == pytest.approx(float(max(others) - z[i, y[i]]))
        others_t = [z[i, j] for j in range(10) if j != t[i]]
        got = margin_loss(z[i : i + 1], y[i : i + 1], t[i : i + 1]).item()
        assert got == pytest.approx(float(z[i, t[i]] - max(others_t)))
    assert ((margin_loss(z, y) > 0) == (z.argmax(1) != y)).all()  # positive exactly when misclassified


def test_dlr_matches_torchattacks_apgd():
    z, y = _logits(c=10)
    t = (y + 3) % 10
    theirs = torchattacks.APGD.dlr_loss(None, z, y)  # the loss as torchattacks' APGD writes it
    assert torch.allclose(dlr_loss(z, y), theirs, atol=1e-6)
    theirs_t = torchattacks.APGDT.dlr_loss_targeted(None, z, y, t)
    assert torch.allclose(dlr_loss(z, y, t), theirs_t, atol=1e-6)
    # invariant to shifting and positive scaling of the logits (Croce & Hein 2020)
    assert torch.allclose(dlr_loss(5 * z - 2, y), dlr_loss(z, y), atol=1e-5)
    assert torch.allclose(dlr_loss(5 * z - 2, y, t), dlr_loss(z, y, t), atol=1e-5)


def test_pgd_ce_loss_is_todays_pgd(model, digits_test):
    # the PGD loop as it stood before the loss parameter, inlined: loss="ce" must equal it bit for bit
    x, y = digits_test.x[:64], digits_test.y[:64]
    t = random_targets(y, 10)
    for target in (None, t):
        attack = rk.attack("pgd", "reference", eps=0.1, steps=5, seed=2)
        adv = (x + attack.random_start(x, torch.arange(64))).clamp(0, 1)
        labels, sign = (y, 1.0) if target is None else (t, -1.0)
        for _ in range(5):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(sign * F.cross_entropy(model(adv), labels, reduction="sum"), adv)
            adv = (x + (adv.detach() + 2.5 * 0.1 / 5 * grad.sign() - x).clamp(-0.1, 0.1)).clamp(0, 1)
        assert torch.equal(rk.attack("pgd", "reference", eps=0.1, steps=5, seed=2, loss="ce")(model, x, y, target), adv)


@pytest.mark.parametrize("loss", ["margin", "dlr"])
def test_losses_keep_each_image_independent_of_its_batch(model, digits_test, loss):
    x, y = digits_test.x[:48], digits_test.y[:48]
    t = random_targets(y, 10)
    perm = torch.randperm(48, generator=torch.Generator().manual_seed(0))
    for target in (None, t):
        attack = rk.attack("pgd", "reference", eps=0.1, steps=5, loss=loss)
        whole = attack(model, x, y, target)
        assert torch.equal(
            attack(model, x[perm], y[perm], None if target is None else t[perm], index=perm), whole[perm]
        )
        assert torch.equal(attack_batches(attack, model, x, y, target, batch_size=7), whole)
        assert not torch.equal(whole, rk.attack("pgd", "reference", eps=0.1, steps=5)(model, x, y, target))


def test_margin_and_dlr_see_through_a_saturating_sigmoid(model, digits_test):
    # measured on 300 digits test images: plain 0.530 / 0.533 / 0.553 (ce / margin / dlr), through the
    # sigmoid 0.820 / 0.583 / 0.610: the cross-entropy overstates by 21-24 points (all 450: 0.842 / 0.582 / 0.613;
    # CIFAR prefix, small CNN, 500 images at 8/255: plain 0.008 each, sigmoid 0.198 / 0.032 / 0.030)
    x, y = digits_test.x[:300], digits_test.y[:300]
    sig = Sigmoid(model)
    assert torch.equal(predict(sig, x), predict(model, x))

    def acc(m, loss):
        return accuracy(m, rk.attack("pgd", "reference", eps=0.1, steps=10, loss=loss)(m, x, y), y)

    plain = {loss: acc(model, loss) for loss in ("ce", "margin", "dlr")}
    through = {loss: acc(sig, loss) for loss in ("ce", "margin", "dlr")}
    assert max(plain.values()) - min(plain.values()) < 0.06, plain
    assert through["ce"] > through["margin"] + 0.15 and through["ce"] > through["dlr"] + 0.15, through
    assert abs(through["margin"] - plain["margin"]) < 0.1 and abs(through["dlr"] - plain["dlr"]) < 0.1


def test_targeted_margin_reaches_the_target_and_targeted_dlr_misclassifies(model, digits_test):
    # the paper's targeted DLR raises z_t above z_y only (APGD-T misclassifies with it); measured on 100
    # images at eps 0.3, 20 steps: at the target ce 0.94, margin 0.87, dlr 0.36; dlr misclassified 0.91
    x, y = digits_test.x[:64], digits_test.y[:64]
    t = random_targets(y, 10, seed=1)
    margin = predict(model, rk.attack("pgd", eps=0.3, steps=20, loss="margin")(model, x, y, t))
    dlr = predict(model, rk.attack("pgd", eps=0.3, steps=20, loss="dlr")(model, x, y, t))
    assert (margin == t).float().mean() > 0.8 and (dlr != y).float().mean() > 0.8, ((margin == t).float().mean(), dlr)


def test_pgd_l2_takes_the_loss_too(model, digits_test):
    x, y = digits_test.x[:100], digits_test.y[:100]
    sig = Sigmoid(model)
    ce = accuracy(sig, rk.attack("pgd_l2", "reference", eps=1.0, steps=10)(sig, x, y), y)
    margin = accuracy(sig, rk.attack("pgd_l2", "reference", eps=1.0, steps=10, loss="margin")(sig, x, y), y)
    assert margin < ce - 0.1, (ce, margin)


def test_dlr_refuses_too_few_classes():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 2, 2)
    three = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    y, t = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    attack = rk.attack("pgd", "reference", eps=0.1, steps=2, loss="dlr")
    assert attack(three, x, y).shape == x.shape  # untargeted DLR reads z_π3: 3 classes suffice
    with pytest.raises(ValueError, match=r"targeted DLR loss .* at least 4 classes; the model has 3.*loss='margin'"):
        attack(three, x, y, target=t)
    two = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"untargeted DLR loss .* at least 3 classes; the model has 2"):
        attack(two, x, y % 2)
    assert rk.attack("pgd", "reference", eps=0.1, steps=2, loss="margin")(two, x, y % 2).shape == x.shape
    with pytest.raises(ValueError, match="loss='hinge' is not one of 'ce', 'margin', 'dlr'"):
        rk.attack("pgd", loss="hinge")


def test_eot_pgd_equals_pgd_on_a_deterministic_model(model, digits_test):
    x, y = digits_test.x[:32], digits_test.y[:32]
    t = random_targets(y, 10)
    fixed = {"eps": 0.1, "steps": 4, "random_start": False}
    for target in (None, t):
        pgd = rk.attack("pgd", "reference", **fixed)(model, x, y, target)
        assert torch.equal(rk.attack("eot_pgd", "reference", eot_samples=3, **fixed)(model, x, y, target), pgd)
        assert torch.equal(rk.attack("eot_pgd", "torchattacks", eot_samples=3, **fixed)(model, x, y, target), pgd)
    started = rk.attack("eot_pgd", "reference", eps=0.1, steps=4, eot_samples=2, loss="margin")
    assert torch.equal(
        started(model, x, y), rk.attack("pgd", "reference", eps=0.1, steps=4, loss="margin")(model, x, y)
    )


def _mean_accuracy(model, x, y, draws=20):
    """Accuracy of a randomised model, averaged over ``draws`` passes (Athalye et al. 2018)."""
    with torch.random.fork_rng():
        torch.manual_seed(123)
        with torch.no_grad():
            return float(np.mean([(model(x).argmax(1) == y).float().mean().item() for _ in range(draws)]))


def test_eot_pgd_beats_pgd_on_a_randomised_model(model, digits_test):
    # measured at eps 0.1, 10 steps, accuracy averaged over draws: input noise std 0.1 / 0.2 / 0.3 (300 images):
    # PGD 0.537 / 0.521 / 0.468, EOT-10 0.524 / 0.495 / 0.441, torchattacks' EOTPGD 0.523 / 0.499 / 0.441.
    # One draw's gradient is a fair guess of the mean's on this model, and the steps average draws too: EOT
    # takes 1-4 points more at 10 steps, more at fewer steps (input dropout 0.3, 200 images, 3 steps: PGD 0.438,
    # EOT-10 0.373, EOT-30 0.365; 10 steps: 0.409, 0.368).
    x, y = digits_test.x[:200], digits_test.y[:200]
    dropped = Dropout(model, 0.3)
    pgd = _mean_accuracy(dropped, rk.attack("pgd", eps=0.1, steps=3)(dropped, x, y), y)
    eot = _mean_accuracy(dropped, rk.attack("eot_pgd", eps=0.1, steps=3)(dropped, x, y), y)
    theirs = _mean_accuracy(dropped, rk.attack("eot_pgd", "torchattacks", eps=0.1, steps=3)(dropped, x, y), y)
    assert eot < pgd - 0.04 and abs(theirs - eot) < 0.03, (pgd, eot, theirs)


@pytest.mark.parametrize(("name", "eps", "pgd_name"), [("square", 0.2, "pgd"), ("square_l2", 2.0, "pgd_l2")])
def test_square_stays_in_the_ball_and_nears_pgd_at_a_large_eps(model, digits_test, name, eps, pgd_name):
    # measured on 100 images: L∞ eps 0.2, PGD-20 0.03, Square 0.09 (300 queries) / 0.05 (1000); L2 eps 2: both 0.00
    x, y = digits_test.x[:48], digits_test.y[:48]
    attack = rk.attack(name, eps=eps, n_queries=300)
    with torch.random.fork_rng():
        raw = attack._run(model, x, y, None, 10)  # torchattacks' own output, before robustkit's projection
    delta = (raw - x).flatten(1)
    size = delta.abs().max(dim=1).values if attack.norm == "linf" else delta.norm(dim=1)
    assert raw.min() >= 0 and raw.max() <= 1 and size.max() <= eps * (1 + 1e-5)
    clean, pgd = accuracy(model, x, y), accuracy(model, rk.attack(pgd_name, eps=eps, steps=20)(model, x, y), y)
    square = accuracy(model, raw, y)
    assert clean > 0.9 and square < 0.15 and square <= pgd + 0.1, (clean, pgd, square)


def test_square_backends_agree(model, digits_test):
    # measured on 100 images, 300 queries: eps 0.1, ART 0.60, torchattacks 0.64; eps 0.2, ART 0.07, torchattacks 0.09
    # (these 32 images, 200 queries: ART 0.062, torchattacks 0.094)
    x, y = digits_test.x[:32], digits_test.y[:32]
    art, ours = rk.evaluate.agreement("square", model, x, y, backends=["art", "torchattacks"], eps=0.2, n_queries=200)
    assert abs(art["accuracy"] - ours["accuracy"]) <= 0.1 and ours["accuracy"] < 0.2, (art, ours)
    attack = rk.attack("square", "art", eps=0.2, n_queries=50)
    with torch.random.fork_rng():
        raw = attack._run(model, x[:16], y[:16], None, 10)
    assert raw.min() >= 0 and raw.max() <= 1 and (raw - x[:16]).abs().max() <= 0.2 + 1e-6
    state = np.random.get_state()
    assert torch.equal(attack(model, x[:16], y[:16]), attack(model, x[:16], y[:16])), "seeded: the same squares"
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state, strict=True)), "numpy's RNG restored"


def test_square_targeted_reaches_the_target(model, digits_test):
    x, y = digits_test.x[:16], digits_test.y[:16]
    t = random_targets(y, 10, seed=1)
    adv = rk.attack("square", eps=0.3, n_queries=200)(model, x, y, target=t)
    assert (predict(model, adv) == t).float().mean() > 0.75


def test_seed_none_draws_from_the_global_rng(model, digits_test):
    x, y = digits_test.x[:8], digits_test.y[:8]
    attack = rk.attack("pgd", eps=0.1, steps=2, seed=None)
    torch.manual_seed(5)
    first, second = attack(model, x, y), attack(model, x, y)
    assert not torch.equal(first, second), "two calls with seed=None must differ"
    torch.manual_seed(5)
    assert torch.equal(attack(model, x, y), first), "torch.manual_seed must repeat them"
    square = rk.attack("square", seed=None)  # torchattacks' Square would seed itself from the clock
    torch.manual_seed(0)
    seeds = [square._kwargs(10)["seed"] for _ in range(2)]
    torch.manual_seed(0)
    assert seeds[0] != seeds[1] and square._kwargs(10)["seed"] == seeds[0]
    assert rk.attack("square", seed=3)._kwargs(10)["seed"] == 3


def test_autoattack_seed_none_draws_from_the_global_rng(model, digits_test):
    aa = rk.attack("autoattack", "torchattacks", eps=0.3, seed=None)
    torch.manual_seed(0)
    seeds = [aa._kwargs(10)["seed"] for _ in range(2)]
    torch.manual_seed(0)
    assert seeds[0] != seeds[1] and aa._kwargs(10)["seed"] == seeds[0] and seeds[0] != 0
    assert rk.attack("autoattack", "torchattacks", seed=7)._kwargs(10)["seed"] == 7
    # end to end: at eps 0.3 APGD-CE fools every image from its seeded random start
    x, y = digits_test.x[:6], digits_test.y[:6]
    torch.manual_seed(1)
    first, second = aa(model, x, y), aa(model, x, y)
    assert accuracy(model, first, y) == 0 and not torch.equal(first, second)
    torch.manual_seed(1)
    assert torch.equal(aa(model, x, y), first)
