"""robustkit's reference attacks: PGD with per-example seeded random starts, and DeepFool."""

import pytest
import torch

import robustkit as rk
from robustkit.evaluate import attack_batches, predict


def test_reference_pgd_is_independent_of_the_batch(model, digits_test):
    x, y = digits_test.x[:64], digits_test.y[:64]
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    for name, eps in (("pgd", 0.1), ("pgd_l2", 1.0)):
        attack = rk.attack(name, "reference", eps=eps, steps=5, seed=3)
        whole = attack(model, x, y)
        assert torch.equal(attack(model, x[perm], y[perm], index=perm), whole[perm])
        alone = torch.cat([attack(model, x[i : i + 1], y[i : i + 1], index=torch.tensor([i])) for i in range(0, 64, 8)])
        batched = attack_batches(attack, model, x, y, batch_size=10)
        if name == "pgd":  # L∞ steps take the gradient's sign: bit for bit
            assert torch.equal(alone, whole[::8]) and torch.equal(batched, whole)
        else:  # the model's float arithmetic depends on the batch size (threads, kernels): 1e-6
            assert torch.allclose(alone, whole[::8], atol=1e-5) and torch.allclose(batched, whole, atol=1e-5)
        assert torch.equal(predict(model, alone), predict(model, whole[::8]))
        starts = attack.random_start(x, torch.arange(64))
        assert torch.equal(attack.random_start(x[5:7], torch.tensor([5, 6])), starts[5:7])
        assert not torch.equal(starts, rk.attack(name, "reference", eps=eps, seed=4).random_start(x, torch.arange(64)))


def test_reference_pgd_matches_torchattacks_without_random_start(model, digits_test):
    x, y = digits_test.x[:64], digits_test.y[:64]
    t = rk.evaluate.random_targets(y, 10)
    linf = {"eps": 0.1, "steps": 7, "random_start": False}
    for target in (None, t):
        ours = rk.attack("pgd", "reference", **linf)(model, x, y, target=target)
        theirs = rk.attack("pgd", "torchattacks", **linf)(model, x, y, target=target)
        assert torch.equal(ours, theirs)
    # torchattacks' L2 step divides the gradient of the batch-mean loss by (norm + 1e-10), which depends on
    # the batch size; on one image at a time (mean = sum) the two agree to float precision.
    l2 = {"eps": 1.0, "steps": 7, "random_start": False}
    ours = rk.attack("pgd_l2", "reference", **l2)(model, x[:8], y[:8])
    theirs = torch.cat([rk.attack("pgd_l2", "torchattacks", **l2)(model, x[i : i + 1], y[i : i + 1]) for i in range(8)])
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_reference_random_start_stays_in_the_ball(model, digits_test):
    x, y = digits_test.x[:32], digits_test.y[:32]
    linf = rk.attack("pgd", "reference", eps=0.1, seed=0)
    assert linf.random_start(x, torch.arange(32)).abs().max() <= 0.1
    norms = rk.attack("pgd_l2", "reference", eps=0.5).random_start(x, torch.arange(32)).flatten(1).norm(dim=1)
    assert norms.max() <= 0.5 + 1e-6 and norms.std() > 0.05  # radius eps·U(0, 1), as torchattacks draws it
    unseeded = rk.attack("pgd", "reference", eps=0.1, seed=None)
    torch.manual_seed(1)
    a = unseeded(model, x, y)
    torch.manual_seed(1)
    assert torch.equal(a, unseeded(model, x, y)), "seed=None draws from the global RNG"


def test_reference_deepfool_matches_art(model, digits_test):
    x, y = digits_test.x[:48], digits_test.y[:48]
    rows = rk.evaluate.agreement("deepfool", model, x, y, backends=["art", "reference"], steps=10)
    art, ours = rows
    assert ours["accuracy"] == art["accuracy"] < 0.1
    assert abs(ours["mean_l2"] - art["mean_l2"]) <= 1e-3 * art["mean_l2"] and ours["max_abs_diff"] < 1e-4
    assert all(r["mean_l1"] >= r["mean_l2"] >= r["mean_linf"] > 0 for r in rows)  # ‖δ‖₁ ≥ ‖δ‖₂ ≥ ‖δ‖∞ per image


def test_index_errors(model, batch):
    x, y = batch
    attack = rk.attack("pgd", "reference", eps=0.1, steps=1)
    with pytest.raises(TypeError, match="int64 tensor of positions"):
        attack(model, x, y, index=list(range(len(x))))
    with pytest.raises(ValueError, match="one position per image"):
        attack(model, x, y, index=torch.arange(3))
    with pytest.raises(ValueError, match="negative"):
        attack(model, x, y, index=torch.arange(len(x)) - 1)
