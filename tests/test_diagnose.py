"""Sanity checks: each fires where it should and stays quiet on the healthy digits model."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import robustkit as rk
from robustkit.defenses.preprocess import PreprocessedModel
from robustkit.evaluate import (
    Check,
    Diagnosis,
    adaptive_vs_oblivious,
    catastrophic_overfitting,
    defense_cost,
    diagnose,
    gradients_available,
    incomplete_optimisation,
    iterative_vs_single_step,
    model_learned,
    monotone_in_eps,
    ood,
    ood_auroc,
    ood_metrics,
    ood_saturated,
    unbounded_attack,
    unstable_predictions,
)
from robustkit.evaluate.diagnose import CHECKS, noise_tolerance

SAMPLE = 64  # points per diagnosis: enough to separate the cases below, fast on 2 cores
PGD = rk.attack("pgd", eps=8 / 255, steps=5)


def quantise(x):
    return torch.round(x * 8) / 8  # 8 grey levels: zero gradient almost everywhere


class Noisy(nn.Module):
    """A randomised defense: fresh Gaussian noise on the input at every call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x + 0.1 * torch.randn_like(x)).clamp(0, 1))


class Saturated(nn.Module):
    """Logits × 20: a student distilled at T = 20 and used at T = 1 (its softmax saturates)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return 20 * self.model(x)


@pytest.fixture(scope="module")
def sample(digits_test):
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(digits_test), generator=g)[:SAMPLE]
    return digits_test.x[idx], digits_test.y[idx]


@pytest.fixture(scope="module")
def untrained(digits_train):
    from robustkit.modelling.models import build_model, model_spec

    torch.manual_seed(0)
    return build_model(model_spec("small_cnn", digits_train.info)).eval()


def statuses(diagnosis):
    return {c.name: c.status for c in diagnosis.checks}


# ------------------------------------------------------------ diagnose on real models


def test_healthy_model_passes_every_check(model, digits_test):
    d = diagnose(model, digits_test, attack=PGD, defense_of=model, sample=SAMPLE)
    assert statuses(d) == dict.fromkeys(CHECKS, "pass") and d.ok and d.skipped == {}
    m = d.measured
    assert m["clean_accuracy"] > 0.9 and m["unbounded_accuracy"] == 0.0
    curve = m["eps_curve"]
    assert curve["eps"] == pytest.approx([0, 4 / 255, 8 / 255, 16 / 255, 1.0])
    assert curve["accuracy"][0] == m["clean_accuracy"] and curve["accuracy"][2] == m["robust_accuracy"]
    assert all(a >= b for a, b in zip(curve["accuracy"], curve["accuracy"][1:], strict=False))
    assert d.sample == SAMPLE and d.cost["ratio"] > 1 and d.cost["attack_runs"] <= 8
    record = json.loads(json.dumps(d.as_dict()))
    assert record["ok"] and [c["name"] for c in record["checks"]] == list(CHECKS)
    assert all(c["paper"].count("https://arxiv.org/abs/") >= 1 for c in record["checks"])
    assert "| pass | unbounded_attack |" in d.markdown()


def test_quantising_input_layer_trips_the_gradient_checks(model, digits_test):
    """round() before the model: no gradient, so PGD cannot move, even with eps = 1."""
    defended = PreprocessedModel(quantise, model, straight_through=False)
    d = diagnose(defended, digits_test, attack=rk.attack("pgd", eps=0.1, steps=5), defense_of=model, sample=SAMPLE)
    s = statuses(d)
    assert s["gradients_available"] == "fail" and d["gradients_available"].values["share_zero"] == 1.0
    assert s["unbounded_attack"] == "fail" and d["unbounded_attack"].values["accuracy"] > 0.1
    assert s["adaptive_vs_oblivious"] == "fail"  # the oblivious attack (on the bare model) does far better
    assert d.measured["oblivious_accuracy"] < d.measured["robust_accuracy"] - 0.3
    assert s["model_learned"] == s["defense_cost"] == s["unstable_predictions"] == s["output_head"] == "pass"
    assert s["gradient_consistency"] == "fail"  # a step that crosses a rounding threshold moves the output, unseen
    assert not d.ok and {c.name for c in d.problems} - {"gradient_free"} == {
        "gradients_available",
        "gradient_consistency",
        "unbounded_attack",
        "adaptive_vs_oblivious",
    }


def test_the_same_defense_attacked_with_bpda_passes(model, digits_test):
    defended = PreprocessedModel(quantise, model, straight_through=True)
    d = diagnose(defended, digits_test, attack=rk.attack("pgd", eps=0.1, steps=5), defense_of=model, sample=SAMPLE)
    assert d.ok, str(d)


def test_weak_attack_trips_the_attack_checks(model, digits_test):
    """One PGD step of 0.02 at eps 0.1, no random start (deterministic on every backend): weaker
    than FGSM, unconverged, short of eps = 1."""
    weak = rk.attack("pgd", eps=0.1, steps=1, alpha=0.02, random_start=False)
    d = diagnose(model, digits_test, attack=weak, sample=SAMPLE)
    s = statuses(d)
    assert s["iterative_vs_single_step"] == "fail"
    assert d.measured["robust_accuracy"] > d.measured["fgsm_accuracy"] + 0.2
    assert s["incomplete_optimisation"] in ("warn", "fail") and d["incomplete_optimisation"].values["drop"] > 0.03
    assert s["unbounded_attack"] in ("warn", "fail")
    assert s["model_learned"] == s["gradients_available"] == s["unstable_predictions"] == "pass"


def test_untrained_model_fails_model_learned_only(untrained, digits_test):
    d = diagnose(untrained, digits_test, sample=SAMPLE)
    model_checks = ["model_learned", "output_head", "input_scale", "label_order", "gradients_available", "gradient_consistency"]
    quiet = {"unstable_predictions": "pass", "forward_optimisation": "pass"}
    assert statuses(d) == {**dict.fromkeys(model_checks, "pass"), "model_learned": "fail", **quiet}
    assert d["model_learned"].values["clean_accuracy"] <= d["model_learned"].values["fail_at_or_below"]
    assert set(d.skipped) == set(CHECKS) - {*model_checks, *quiet}
    assert d.skipped["unbounded_attack"] == "needs attack=" and "ratio" not in d.cost


def test_randomised_model_warns_unstable_predictions(model, digits_test):
    d = diagnose(Noisy(model), digits_test, sample=SAMPLE)
    assert statuses(d) == {
        "model_learned": "pass",
        "output_head": "pass",
        "input_scale": "pass",
        "label_order": "pass",
        "gradients_available": "pass",
        "gradient_consistency": "fail",  # fresh noise at every call: the gradient cannot predict the next output
        "unstable_predictions": "warn",
        "forward_optimisation": "pass",
    }
    assert d["unstable_predictions"].values["relative_change"] > 1e-2
    assert "EOT" in d["unstable_predictions"].detail


def test_saturated_softmax_has_no_gradient_on_most_points(model, sample):
    x, y = sample
    check = gradients_available(Saturated(model), x, y)
    assert check.status == "fail" and check.values["share_zero"] > 0.3
    healthy = gradients_available(model, x, y)
    assert healthy.status == "pass" and healthy.values["share"] == 0.0 and healthy.values["median_norm"] > 0


def test_standalone_attack_checks(model, sample):
    x, y = sample
    assert unbounded_attack(rk.attack("fgsm"), model, x, y).status == "pass"
    l2 = unbounded_attack(rk.attack("pgd_l2", eps=0.5, steps=5), model, x, y)
    assert l2.status == "pass" and l2.values["budget"] == pytest.approx(8.0)  # sqrt(1·8·8)
    done = incomplete_optimisation(PGD, model, x, y)
    assert done.status == "pass" and done.values["drop"] <= done.values["warn_above"]
    assert unstable_predictions(model, x).values["max_logit_change"] == 0.0
    with pytest.raises(ValueError, match="steps"):
        incomplete_optimisation(rk.attack("fgsm"), model, x, y)


def test_data_forms_sampling_and_skip(model, digits_test):
    a = diagnose(model, digits_test, sample=32, seed=1)
    b = diagnose(model, (digits_test.x, digits_test.y), sample=32, seed=1)
    c = diagnose(model, digits_test.loader(batch_size=100), sample=32, seed=1)
    assert a.measured == b.measured == c.measured and a.sample == 32
    d = diagnose(model, digits_test, attack="fgsm", sample=32, skip=["monotone_in_eps", "gradients_available"])
    assert "monotone_in_eps" not in d and d.skipped["monotone_in_eps"].startswith("skipped by the caller")
    assert d.names == [
        "model_learned",
        "output_head",
        "input_scale",
        "label_order",
        "gradient_consistency",
        "unstable_predictions",
        "forward_optimisation",
        "budget_units",
        "unbounded_attack",
        "gradient_free",
    ]
    with pytest.raises(KeyError, match="skipped by the caller"):
        d["monotone_in_eps"]
    with pytest.raises(ValueError, match="valid names"):
        diagnose(model, digits_test, skip=["nope"])
    with pytest.raises(ValueError, match="sample"):
        diagnose(model, digits_test, sample=0)


def test_diagnose_leaves_the_model_as_it_was(model, digits_test):
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    try:
        diagnose(model, digits_test, attack="fgsm", sample=16)
        assert model.training and [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_top_level_name():
    assert rk.diagnose is diagnose


# ------------------------------------------------------------ checks on numbers


def test_noise_tolerance_is_two_binomial_standard_errors():
    assert noise_tolerance(0.5, 0.3, 256) == pytest.approx(2 * math.sqrt((0.25 + 0.21) / 256))
    assert noise_tolerance(0.0, 0.0, 100) == pytest.approx(0.01)  # one point
    assert noise_tolerance(0.5, 0.5, 100, z=4) == pytest.approx(2 * noise_tolerance(0.5, 0.5, 100))


def test_model_learned_thresholds():
    assert model_learned(0.97, 10, 256).status == "pass"
    assert model_learned(0.15, 10, 256).status == "warn"  # above chance + 2 SE (0.1375), below 2× chance
    assert model_learned(0.12, 10, 256).status == "fail"
    assert model_learned(0.10, 10).status == "fail"
    assert model_learned(0.70, 2, 256).status == "warn"  # two classes: below halfway from chance to 1
    assert model_learned(0.90, 2, 256).status == "pass"
    with pytest.raises(ValueError, match="fraction"):
        model_learned(97.0, 10)


def test_monotone_in_eps_allows_noise_only():
    eps = [0.05, 0.1, 0.2]
    rising = monotone_in_eps(eps, [0.5, 0.3, 0.45], 256)  # +15 points; 2 SE = 8.5, 4 SE = 16.9
    assert rising.status == "warn" and rising.values["rise"] == pytest.approx(0.15)
    assert rising.values["from_eps"] == 0.1 and rising.values["to_eps"] == 0.2
    assert monotone_in_eps(eps, [0.5, 0.3, 0.33], 256).status == "pass"  # +3 points: noise
    assert monotone_in_eps(eps, [0.5, 0.1, 0.6], 256).status == "fail"
    assert monotone_in_eps(["8/255", 0, "4/255"], [0.4, 0.9, 0.6], 256).status == "pass"  # sorted by eps
    assert monotone_in_eps(eps, [0.5, 0.45, 0.4], 256).status == "pass"
    with pytest.raises(ValueError, match="one accuracy each"):
        monotone_in_eps(eps, [0.5], 256)


def test_iterative_and_adaptive_comparisons():
    assert iterative_vs_single_step(0.30, 0.45, 256).status == "pass"
    assert iterative_vs_single_step(0.47, 0.45, 256).status == "pass"  # within noise
    assert iterative_vs_single_step(0.60, 0.45, 256).status == "warn"  # +15: 2 SE = 8.7, 4 SE = 17.4
    assert iterative_vs_single_step(0.90, 0.45, 256).status == "fail"
    assert adaptive_vs_oblivious(0.10, 0.40, 100).status == "pass"
    check = adaptive_vs_oblivious(0.95, 0.45, 100)
    assert check.status == "fail" and check.values["excess"] == pytest.approx(0.5)
    assert "BPDA" in check.detail


def test_defense_cost_threshold():
    assert defense_cost(0.97, 0.92).status == "pass"
    check = defense_cost(0.97, 0.80)
    assert check.status == "warn" and check.values["drop"] == pytest.approx(0.17)
    assert defense_cost(0.97, 0.92, threshold=0.02).status == "warn"
    gain = defense_cost(0.980, 0.982)
    assert gain.status == "pass" and "costs no clean accuracy (98.0% → 98.2%)" in gain.detail and "-" not in gain.detail


def test_catastrophic_overfitting_at_any_accuracy_level():
    cifar = [{"monitor_clean": 0.6, "monitor_fgsm": 0.46, "monitor_pgd": 0.0} for _ in range(5)]
    check = catastrophic_overfitting(cifar)
    assert check.status == "warn" and check.values["gap_rule"] and check.values["epoch"] == 1
    assert check.values["last_pgd"] == 0.0 and check.values["last_fgsm"] == 0.46
    healthy = [{"monitor_fgsm": f, "monitor_pgd": p} for f, p in ((0.3, 0.25), (0.45, 0.4), (0.5, 0.44))]
    assert catastrophic_overfitting(healthy).status == "pass"
    late = healthy + [{"monitor_fgsm": 0.7, "monitor_pgd": 0.02}, {"monitor_fgsm": 0.8, "monitor_pgd": 0.0}]
    assert catastrophic_overfitting(late).values["epoch"] == 4
    drop_only = [{"monitor_fgsm": 0.25, "monitor_pgd": 0.3}, {"monitor_fgsm": 0.22, "monitor_pgd": 0.14}]
    values = catastrophic_overfitting(drop_only).values
    assert values["drop_rule"] and not values["gap_rule"] and values["collapsed"]
    with pytest.raises(ValueError, match="monitor"):
        catastrophic_overfitting([{"loss": 1.0}])


def test_training_property_uses_the_same_rules():
    trainer = rk.defense("adversarial_training")
    assert trainer.catastrophic_overfitting is None
    for history in (
        [{"monitor_fgsm": 0.46, "monitor_pgd": 0.0}],  # missed by the old rule (best PGD ≤ 0.1)
        [{"monitor_fgsm": 0.5, "monitor_pgd": 0.44}],
        [{"monitor_fgsm": 0.5, "monitor_pgd": 0.45}, {"monitor_fgsm": 0.6, "monitor_pgd": 0.1}],
    ):
        trainer.history = history
        assert trainer.catastrophic_overfitting == (catastrophic_overfitting(history).status == "warn")


def test_ood_auroc_and_saturation(model, digits_test):
    assert ood_auroc(0.3).status == "warn" and "sign flip" in ood_auroc(0.3).detail and "below chance" in ood_auroc(0.3).detail
    assert ood_auroc({"AUROC": 0.8}).status == "pass"
    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(0, 1, 500), rng.normal(1, 1, 500)
    assert ood_auroc(ood_metrics(-id_s, -ood_s)).status == "warn"  # a flipped sign
    assert ood_saturated(id_s, ood_s).status == "pass"
    tied = ood_saturated(np.r_[np.full(300, -1.0), id_s[:200]], ood_s)
    assert (
        tied.status == "warn" and tied.values["mode_value"] == -1.0 and tied.values["tied_share"] == pytest.approx(0.3)
    )
    noise = torch.rand(200, *digits_test.x.shape[1:], generator=torch.Generator().manual_seed(0))
    result = ood(rk.detector("max_logit").fit(model), digits_test.x[:200], noise)
    assert ood_auroc(result).status == "pass"
    assert ood_saturated(result.id_scores, result.ood_scores).status == "pass"
    softmax = ood(rk.detector("max_softmax").fit(Saturated(model)), digits_test.x[:200], noise)
    assert ood_saturated(softmax.id_scores, softmax.ood_scores).status == "warn"  # softmax at exactly 1.0


def test_check_and_diagnosis_objects():
    with pytest.raises(ValueError, match="status"):
        Check("x", "ok", "detail")
    d = Diagnosis([Check("a", "pass", "fine"), Check("b", "warn", "look")], sample=3)
    assert not d.ok and [c.name for c in d.problems] == ["b"] and "b" in d and "c" not in d
    assert str(d).startswith("diagnosis on 3 points: 1 problem(s)") and "[warn] b: look" in str(d)
