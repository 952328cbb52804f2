"""The official AutoAttack (pyautoattack) through robustkit: equal to the authors' code called directly,
its components, the per-component log, the resumable state and the authors' flag checks."""

import pyautoattack
import pytest
import torch
from torch import nn

import robustkit as rk
from robustkit.attacks.autoattack import quiet_official
from robustkit.evaluate import robust_accuracy
from robustkit.evaluate.checks.official import autoattack_flags

EPS = 0.1
SUITE = ["apgd-ce", "apgd-t"]  # short: FAB-T and Square (5000 queries) cost seconds per image on a CPU


def official(model, x, y, batch_size, norm="Linf", eps=EPS, attacks=SUITE, seed=0):
    """The authors' run_standard_evaluation, its adversarial images and its log's accuracy after each attack."""
    suite = pyautoattack.AutoAttack(model, eps=eps, norm=norm, seed=seed, version="custom", attacks=list(attacks))
    with quiet_official() as records:
        adv, _ = suite.run_standard_evaluation(x, y, batch_size=batch_size)
    model.zero_grad(set_to_none=True)  # the authors' code leaves the gradients of its last backward pass
    log = [r.getMessage() for r in records if r.getMessage().startswith("robust accuracy after")]
    return adv, log


@pytest.fixture(scope="module")
def data(digits_test):
    return digits_test.x[:40], digits_test.y[:40]


@pytest.fixture(autouse=True)
def _one_thread():
    """Many small passes on 8×8 images: on a shared 2-core machine a second thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_one_batch_equals_the_authors_code(model, data):
    x, y = data[0][:12], data[1][:12]
    suite = ["apgd-ce", "fab-t"]
    ours = rk.attack("autoattack", eps=EPS, seed=0, version="custom", attacks=suite)(model, x, y)
    theirs, _ = official(model, x, y, batch_size=len(x), attacks=suite)
    assert (ours - theirs).abs().max() < 1e-6  # robustkit only clips float round-off into the eps-ball
    assert torch.equal(model(ours).argmax(1), model(theirs).argmax(1))


def test_components_with_early_stopping_equal_run_standard_evaluation(model, data):
    """Pooled over data batches, the components meet the same batches in the same order as the
    authors' loop, so robust accuracy and the log after each attack are the same."""
    x, y = data
    result = robust_accuracy(
        rk.attack("autoattack", eps=EPS, seed=0, version="custom", attacks=SUITE), model, x, y, batch_size=16
    )
    adv, log = official(model, x, y, batch_size=16)
    assert round(result["accuracy"] * len(x)) == int((model(adv).argmax(1) == y).sum())
    assert [row["attack"] for row in result.log] == SUITE
    assert [f"{row['accuracy']:.2%}" for row in result.log] == [line.split(": ")[1].split(" ")[0] for line in log]
    assert 0 < result["accuracy"] < result["clean_accuracy"]  # the budget leaves something to compare
    accuracies = [row["accuracy"] for row in result.log]
    assert accuracies == sorted(accuracies, reverse=True)  # each component only removes images
    # torch.distributed gives rank r the images r, r + W, …: on the two halves (other batches, so other
    # random starts) the same images stay robust here, as on 200 images at three budgets (docs/evaluate.md)
    suite = rk.attack("autoattack", eps=EPS, seed=0, version="custom", attacks=SUITE)
    halves = [robust_accuracy(suite, model, x[r::2], y[r::2], batch_size=16, distributed=False) for r in range(2)]
    assert sum(round(h["accuracy"] * len(x[r::2])) for r, h in enumerate(halves)) == round(result["accuracy"] * len(x))


def test_square_component_equals_the_authors_square(model, data):
    x, y = data[0][:16], data[1][:16]
    ours = rk.attack("square", backend="autoattack", eps=EPS, n_queries=50, seed=3)(model, x, y)
    from pyautoattack.square import SquareAttack

    theirs = SquareAttack(model, n_queries=50, eps=EPS, norm="Linf", seed=3, resc_schedule=False).perturb(x, y)
    assert (ours - theirs).abs().max() < 1e-6


@pytest.mark.parametrize(
    ("name", "eps", "norm"), [("apgd", 0.1, "linf"), ("apgd_l2", 0.8, "l2"), ("apgd_l1", 4.0, "l1")]
)
def test_apgd_stays_in_its_ball_and_beats_pgd_budget(model, data, name, eps, norm):
    x, y = data
    adv = rk.attack(name, eps=eps, steps=20, seed=0)(model, x, y)
    size = rk.attacks.base.perturbation_norms(adv - x, norm)
    assert size.max() <= eps * (1 + 1e-5) and adv.min() >= 0 and adv.max() <= 1
    assert (model(adv).argmax(1) == y).float().mean() < (model(x).argmax(1) == y).float().mean()


def test_the_default_autoattack_is_the_authors_and_torchattacks_is_named_for_what_it_is():
    assert rk.attack("autoattack").backend == "autoattack"
    assert "10-iteration" in (type(rk.attack("autoattack", backend="torchattacks")).__doc__ or "")
    components = rk.attack("autoattack").components()
    assert [c.name for c in components] == ["apgd", "apgd_t", "fab_t", "square"]
    assert components[0].params["steps"] == 100 and components[3].params["n_queries"] == 5000
    l1 = rk.attack("autoattack_l1").components()
    assert l1[0].params["large_eps"] and l1[0].params["restarts"] == 5 and l1[0].norm == "l1"
    assert [c.params["eot_samples"] for c in rk.attack("autoattack", version="rand").components()] == [20, 20]


def test_bad_suites_are_refused_when_built():
    with pytest.raises(ValueError, match="pass attacks="):
        rk.attack("autoattack", version="custom")
    with pytest.raises(ValueError, match="drop attacks="):
        rk.attack("autoattack", attacks=["apgd-ce"])
    with pytest.raises(ValueError, match="unknown AutoAttack attack 'pgd'"):
        rk.attack("autoattack", version="custom", attacks=["pgd"])
    with pytest.raises(ValueError, match="L1 schedule"):
        rk.attack("apgd", large_eps=True)


class Interrupting(nn.Module):
    """Stands in for Ctrl-C: the model's forward raises once it has run ``after`` times."""

    def __init__(self, model, after):
        super().__init__()
        self.model, self.after, self.calls = model, after, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.model(x)


def test_an_interrupted_run_resumes_from_its_state_file(model, digits_test, tmp_path):
    x, y = digits_test.x[:120], digits_test.y[:120]
    attacks = [rk.attack("pgd", eps=0.1, steps=3), rk.attack("pgd", eps=0.1, steps=3, loss="dlr")]
    whole = robust_accuracy(attacks, model, x, y, batch_size=16)
    state = tmp_path / "state.jsonl"
    with pytest.raises(KeyboardInterrupt):
        robust_accuracy(attacks, Interrupting(model, after=40), x, y, batch_size=16, state=state)
    recorded = len(state.read_text().splitlines()) - 1
    assert recorded > 0
    resumed = robust_accuracy(attacks, model, x, y, batch_size=16, state=state)
    assert resumed["accuracy"] == whole["accuracy"] and resumed.log == whole.log
    assert resumed["resumed"] > 0 and resumed["attacked"] + resumed["resumed"] == whole["attacked"]
    # the file now holds every batch: a third run attacks nothing
    again = robust_accuracy(attacks, model, x, y, batch_size=16, state=state)
    assert again["attacked"] == 0 and again["accuracy"] == whole["accuracy"]
    with pytest.raises(ValueError, match="another evaluation"):
        robust_accuracy(attacks[:1], model, x, y, batch_size=16, state=state)
    with pytest.raises(ValueError, match="early stopping"):
        robust_accuracy(attacks, model, x, y, state=tmp_path / "other.jsonl", early_stop=False)


class Noisy(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.05 * torch.randn_like(x))


def test_the_authors_flag_checks_fire_on_their_cases_and_stay_quiet_on_a_healthy_model(model, data):
    x, y = data
    healthy = autoattack_flags(model, x, y, components=["apgd-ce", "apgd-t", "fab-t", "square"])
    assert [c.status for c in healthy] == ["pass"] and "randomized" in healthy[0].values["ran"]
    probabilities = autoattack_flags(nn.Sequential(model, nn.Softmax(1)), x, y, components=["apgd-ce"])
    assert [c.name for c in probabilities] == ["autoattack_flags (probabilities)"]
    randomized = autoattack_flags(Noisy(model), x, y, components=["apgd-ce"])
    assert "autoattack_flags (randomized)" in [c.name for c in randomized]
    assert autoattack_flags(Noisy(model), x, y, components=["apgd-ce"], randomized_ok=True)[0].status == "pass"
    square = autoattack_flags(
        model, x, y, components=["apgd-ce", "square"], clean_accuracy=0.9,
        log=[{"attack": "apgd-ce", "accuracy": 0.5}, {"attack": "square", "accuracy": 0.3}],
    )  # fmt: skip
    assert [c.name for c in square] == ["autoattack_flags (square)"] and "20.00%" in square[0].detail


def test_the_class_check_counts_the_suites_own_targets_and_the_cli_lists_a_custom_suite(model, data):
    x, y = data
    too_many = autoattack_flags(model, x, y, components=["apgd-t"], target_classes=(10, 9))
    assert [c.name for c in too_many] == ["autoattack_flags (classes)"] and "(10)" in too_many[0].detail
    assert autoattack_flags(model, x, y, components=["apgd-t"], target_classes=(9, 9))[0].status == "pass"
    from robustkit.app.cli import _parse_params

    params = _parse_params(["version=custom", "attacks=apgd-ce,apgd-t"])  # robustkit eval --param ...
    assert rk.attack("autoattack", **params).params["attacks"] == ("apgd-ce", "apgd-t")
    one = rk.attack("autoattack", version="custom", attacks="apgd-ce")  # one name, not read as its characters
    assert one.params["attacks"] == ("apgd-ce",)


class Rounded(nn.Module):
    """Pixels rounded to 4 grey levels before the classifier: zero gradient everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)


def test_the_flags_do_not_depend_on_the_users_logging_configuration(model, data):
    import logging

    x, y = data
    normally = autoattack_flags(Rounded(model), x, y, components=["apgd-ce"])
    logging.disable(logging.WARNING)  # a user's process that silences every warning log
    try:
        silenced = autoattack_flags(Rounded(model), x, y, components=["apgd-ce"])
    finally:
        logging.disable(logging.NOTSET)
    assert "autoattack_flags (zero_gradient)" in [c.name for c in normally]
    assert [(c.name, c.status) for c in silenced] == [(c.name, c.status) for c in normally]
    assert autoattack_flags(model, x, y, components=["apgd-ce"])[0].status == "pass"  # the healthy control
