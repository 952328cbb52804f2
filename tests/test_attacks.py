import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robustkit as rk
from robustkit.evaluate import accuracy, agreement, eps_sweep, minimal_budget, predict, random_targets
from robustkit.registry import ATTACKS

FAST = {"steps": 3}
EPS_OF = {"": 0.1, "_l2": 1.0, "_l1": 4.0}  # a budget per norm suffix
PARAMS = (
    {  # small but valid settings for every registered attack
        ("fgsm", b): {"eps": 0.1} for b in ATTACKS["fgsm"]
    }
    | {("pgd", b): {"eps": 0.1, **FAST} for b in ATTACKS["pgd"]}
    | {("pgd_l2", b): {"eps": 1.0, **FAST} for b in ATTACKS["pgd_l2"]}
    | {("eot_pgd", b): {"eps": 0.1, "eot_samples": 2, **FAST} for b in ATTACKS["eot_pgd"]}
    | {("square", b): {"eps": 0.1, "n_queries": 20} for b in ATTACKS["square"]}
    | {("square_l2", b): {"eps": 1.0, "n_queries": 20} for b in ATTACKS["square_l2"]}
    | {
        ("ddn", "foolbox"): {"steps": 10},
        ("deepfool", "art"): {"steps": 5},
        ("deepfool", "torchattacks"): {"steps": 5},
        ("deepfool", "reference"): {"steps": 5},
        ("autoattack", "torchattacks"): {"eps": 0.1},
        ("cw_l2", "torchattacks"): {"steps": 20},
        ("cw_l2", "art"): {"steps": 10},
        ("ead", "art"): {"steps": 5, "search_steps": 2, "c": 0.1},
        ("ead", "torchattacks"): {"steps": 5, "search_steps": 2, "c": 0.1},
        ("hop_skip_jump", "art"): {"max_iter": 2, "max_eval": 50, "init_eval": 10},
        ("hop_skip_jump_linf", "art"): {"max_iter": 2, "max_eval": 50, "init_eval": 10},
    }
    | {  # AutoAttack's components (the authors' code and torchattacks' copies) and the official suite, every norm
        (name + suffix, b): {
            "eps": EPS_OF[suffix],
            **({"n_queries": 20} if name == "square" else {"steps": 5}),
            **({"target_classes": 2} if name.endswith("_t") else {}),
        }
        for name in ("apgd", "apgd_t", "fab", "fab_t", "square")
        for suffix in ("", "_l2", "_l1")
        for b in ATTACKS.get(name + suffix, {})
        if (name, suffix) not in (("square", ""), ("square", "_l2"))
    }
    | {
        (f"autoattack{s}", "autoattack"): {"eps": EPS_OF[s], "version": "custom", "attacks": ["apgd-ce"]}
        for s in EPS_OF
    }
)
ALL = sorted(PARAMS)


def test_every_registered_attack_is_covered():
    assert sorted((n, b) for n, bs in ATTACKS.items() for b in bs) == ALL


def _snapshot(model):
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()], grads


def _same(a, b):
    return a[:2] == b[:2] and all(
        (g is None and h is None) or (g is not None and h is not None and torch.equal(g, h))
        for g, h in zip(a[2], b[2], strict=True)
    )


@pytest.mark.parametrize(("name", "backend"), ALL)
def test_attack_invariants(model, digits_test, name, backend):
    x, y = digits_test.x[:6].clone(), digits_test.y[:6]
    x_before = x.clone()
    model.train()
    next(model.parameters()).grad = torch.ones_like(next(model.parameters()))
    state = _snapshot(model)
    atk = rk.attack(name, backend, **PARAMS[name, backend])
    adv = atk(model, x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert torch.equal(x, x_before)
    assert _same(_snapshot(model), state)
    next(model.parameters()).grad = None
    model.eval()
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    if atk.bounded and atk.norm == "linf":
        assert delta.abs().max() <= atk.eps + 1e-6
    if atk.bounded and atk.norm == "l2":
        assert delta.norm(dim=1).max() <= atk.eps + 1e-4
    if atk.bounded and atk.norm == "l1":
        assert delta.abs().sum(dim=1).max() <= atk.eps * (1 + 1e-5)
    if (name, backend) != ("autoattack", "torchattacks"):  # torchattacks' AutoAttack is seeded by its own seed only
        assert torch.equal(adv, atk(model, x, y)), "same seed, same output"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 0.5), n=st.integers(1, 5), backend=st.sampled_from(["reference", "torchattacks", "art"]))
def test_fgsm_property_ball_and_range(model, digits_test, eps, n, backend):
    x, y = digits_test.x[:n], digits_test.y[:n]
    adv = rk.attack("fgsm", backend, eps=eps)(model, x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= eps + 1e-6


def test_reference_fgsm_matches_hand_computation():
    # one linear layer: the input gradient of the mean cross-entropy is (softmax - onehot) @ W / N
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(5, 1, 2, 2) * 0.5 + 0.25, torch.tensor([0, 1, 2, 0, 1])
    p = F.softmax(lin(x), dim=1)
    grad = (p - F.one_hot(y, 3).float()) @ lin[1].weight / 5
    expected = (x + 0.1 * grad.sign().view_as(x)).clamp(0, 1)
    assert torch.allclose(rk.attack("fgsm", "reference", eps=0.1)(lin, x, y), expected, atol=1e-7)
    target = torch.tensor([1, 2, 0, 2, 0])
    grad_t = (p - F.one_hot(target, 3).float()) @ lin[1].weight / 5
    expected_t = (x - 0.1 * grad_t.sign().view_as(x)).clamp(0, 1)
    assert torch.allclose(rk.attack("fgsm", "reference", eps=0.1)(lin, x, y, target=target), expected_t, atol=1e-7)


def test_fgsm_backends_agree(model, digits_test):
    x, y = digits_test.x[:64], digits_test.y[:64]
    rows = agreement("fgsm", model, x, y, eps=0.1)
    assert [r["backend"] for r in rows] == ["reference", "torchattacks", "art"]
    assert all(r["max_abs_diff"] <= 1e-6 and r["prediction_agreement"] == 1.0 for r in rows)
    t = random_targets(y, 10)
    rows_t = agreement("fgsm", model, x, y, target=t, eps=0.1)
    assert all(r["max_abs_diff"] <= 1e-6 for r in rows_t)


def test_pgd_backends_agree_on_accuracy(model, digits_test):
    x, y = digits_test.x[:128], digits_test.y[:128]
    rows = agreement("pgd", model, x, y, eps=0.1, steps=10)
    assert abs(rows[0]["accuracy"] - rows[1]["accuracy"]) <= 0.05


def test_targeted_fgsm_lowers_target_loss(model, digits_test):
    x, y = digits_test.x[:64], digits_test.y[:64]
    t = random_targets(y, 10)
    adv = rk.attack("fgsm", eps=0.05)(model, x, y, target=t)
    with torch.no_grad():
        before = F.cross_entropy(model(x), t, reduction="none")
        after = F.cross_entropy(model(adv), t, reduction="none")
    assert (after < before).float().mean() > 0.9


@pytest.mark.parametrize(
    ("name", "backend", "params"),
    [
        ("fgsm", "reference", {"eps": 0.2}),
        ("pgd", "foolbox", {"eps": 0.2}),
        ("pgd", "torchattacks", {"eps": 0.2}),
        ("pgd_l2", "foolbox", {"eps": 2.0}),
        ("ddn", "foolbox", {"steps": 50}),
        ("deepfool", "art", {}),
    ],
)
def test_attacks_lower_accuracy(model, digits_test, name, backend, params):
    x, y = digits_test.x[:100], digits_test.y[:100]
    clean = accuracy(model, x, y)
    adv = rk.attack(name, backend, **params)(model, x, y)
    assert clean > 0.9 and accuracy(model, adv, y) < clean - 0.3


@pytest.mark.parametrize(("name", "backend"), [("pgd", "foolbox"), ("pgd", "torchattacks"), ("ddn", "foolbox")])
def test_targeted_attacks_reach_the_target(model, digits_test, name, backend):
    x, y = digits_test.x[:64], digits_test.y[:64]
    t = random_targets(y, 10, seed=1)
    params = {"steps": 50} if name == "ddn" else {"eps": 0.3, "steps": 20}
    adv = rk.attack(name, backend, **params)(model, x, y, target=t)
    assert (predict(model, adv) == t).float().mean() > 0.8


def test_ddn_finds_smaller_l2_than_pgd_l2(model, digits_test):
    x, y = digits_test.x[:64], digits_test.y[:64]
    ddn = rk.attack("ddn", steps=100)(model, x, y)
    pgd = rk.attack("pgd_l2", eps=2.0, steps=20)(model, x, y)
    both = (predict(model, ddn) != y) & (predict(model, pgd) != y)
    assert both.sum() > 30
    l2 = lambda a: (a - x).flatten(1).norm(dim=1)[both]  # noqa: E731
    assert l2(ddn).median() < l2(pgd).median()


def test_sweep_reuses_one_gradient_and_matches_per_eps_attacks(model, digits_test):
    x, y = digits_test.x[:100], digits_test.y[:100]
    grid = [0, 0.05, 0.1, 0.2]
    sweep = eps_sweep(rk.attack("fgsm"), model, x, y, grid)
    assert sweep.passes == {"backward": 1, "forward": len(grid)}  # the gradient pass gives eps=0 too
    assert sweep.accuracy[0] == accuracy(model, x, y)
    for e, acc in zip(grid[1:], sweep.accuracy[1:], strict=True):
        assert acc == accuracy(model, rk.attack("fgsm", "art", eps=e)(model, x, y), y)
    assert sweep.accuracy == sorted(sweep.accuracy, reverse=True)


def test_minimal_budget_is_minimal(model, digits_test):
    x, y = digits_test.x[:20], digits_test.y[:20]
    keep = predict(model, x) == y
    x, y = x[keep], y[keep]
    budget = minimal_budget(model, x, y, max_k=64)
    assert budget.passes["backward"] == 1 and budget.success.any()
    for i in budget.success.nonzero().flatten().tolist():
        k = int(budget.k[i])
        fgsm = rk.attack("fgsm", eps=k / 255)
        assert predict(model, fgsm(model, x[i : i + 1], y[i : i + 1])) != y[i]
        if k > 1:
            below = rk.attack("fgsm", eps=(k - 1) / 255)(model, x[i : i + 1], y[i : i + 1])
            assert predict(model, below) == y[i]
    capped = minimal_budget(model, x, y, max_k=1)
    assert (capped.k[~capped.success] == -1).all()


def test_attack_errors(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="no targeted mode"):
        rk.attack("deepfool")(model, x, y, target=(y + 1) % 10)
    with pytest.raises(ValueError, match="target equals the true label"):
        rk.attack("fgsm")(model, x, y, target=y)
    with pytest.raises(ValueError, match="valid names: fgsm"):
        rk.attack("cw")
    with pytest.raises(ValueError, match="no backend"):
        rk.attack("ddn", backend="art")
    with pytest.raises(TypeError, match="no parameter"):
        rk.attack("fgsm", epsilon=0.1)
    with pytest.raises(ValueError, match="outside"):
        rk.attack("fgsm")(model, x * 255, y)
    with pytest.raises(ValueError, match="cannot take input"):
        rk.attack("fgsm")(model, x.repeat(1, 3, 1, 1), y)
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        rk.attack("fgsm")(model, x, y + 10)


def test_probability_model_warns_once(batch):
    """Once per model, however many batches and calls (issue 30.6: it was printed once per attacked batch)."""
    import warnings

    from robustkit.core.errors import RobustkitWarning

    x, y = batch
    probs = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.Softmax(dim=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            rk.attack("fgsm")(probs, x, y)
        rk.evaluate.attack_batches(rk.attack("fgsm"), probs, x, y, batch_size=8)
    said = [w for w in caught if "probabilities" in str(w.message)]
    assert len(said) == 1 and issubclass(said[0].category, RobustkitWarning)
