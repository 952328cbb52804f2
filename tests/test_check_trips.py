"""The second set of silent wrong numbers (issues 32 and 33): each class has a model or a mistake
built to trip its check, and the healthy trained model as the control that must stay quiet."""


import json

import pytest
import torch
from torch import nn

import robustkit as rk
from robustkit.app.cli import main
from robustkit.core.errors import NoGradientError
from robustkit.evaluate.checks.contract import input_scale, judge_input_scale, label_order
from robustkit.evaluate.checks.masking import forward_optimisation, gradient_consistency, gradients_available


class Head(nn.Module):
    """Any function of the input as a module (the trained model's parameters inside it stay its own)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Thermometer(nn.Module):
    """Each pixel encoded by thresholds (x > 1/4, x > 1/2, x > 3/4) before the classifier: the
    comparisons cut the forward pass off from autograd, so no gradient reaches the pixels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        levels = sum((x > t).float() for t in (0.25, 0.5, 0.75)) / 3
        return self.model(levels)


@pytest.fixture(scope="module")
def sample(digits_test):
    return digits_test.x[:96], digits_test.y[:96]


def test_a_forward_pass_cut_from_autograd_fails_the_gradient_checks_and_does_not_crash_them(model, sample):
    x, y = sample
    cut = Thermometer(model)
    available, consistent = gradients_available(cut, x, y), gradient_consistency(cut, x, y)
    assert (available.status, available.values["cut_from_autograd"]) == ("fail", True)
    assert "cut off from autograd" in available.detail and "BPDA" in available.detail
    assert consistent.status == "fail" and "no gradient reaches the input" in consistent.detail
    assert gradients_available(model, x, y).status == gradient_consistency(model, x, y).status == "pass"


@pytest.mark.parametrize(
    "name, backend", [("fgsm", None), ("pgd", None), ("pgd", "torchattacks"), ("apgd", None), ("cw_l2", "torchattacks")]
)
def test_gradient_attacks_on_a_cut_forward_pass_say_so_in_one_error(model, sample, name, backend):
    """torchattacks' C&W would return the images unchanged (a silent 'robust'); the others raised autograd's error."""
    x, y = sample
    with pytest.raises(NoGradientError, match=r"no gradient reaches the input.*gradient-free attack"):
        rk.attack(name, backend=backend)(Thermometer(model), x[:8], y[:8])
    assert rk.attack(name, backend=backend)(model, x[:8], y[:8]).shape == x[:8].shape  # the control


def test_a_gradient_free_attack_still_runs_on_a_cut_forward_pass(model, sample):
    x, y = sample
    cut = Thermometer(model)
    adv = rk.attack("square", eps=0.3, n_queries=50)(cut, x[:16], y[:16])
    assert (adv - x[:16]).abs().max() <= 0.3 + 1e-6
    assert (rk.evaluate.predict(cut, adv) != y[:16]).sum() > (rk.evaluate.predict(cut, x[:16]) != y[:16]).sum()


def test_diagnose_reports_the_cut_and_skips_the_attack_checks_it_cannot_run(model, sample):
    x, y = sample
    diagnosis = rk.diagnose(Thermometer(model), (x, y), attack="pgd", eps=0.1)
    assert diagnosis["gradients_available"].status == "fail"
    assert "cannot run" in diagnosis.skipped["unbounded_attack"] and "no gradient" in diagnosis.measured["attack_error"]


def test_the_attack_command_on_a_cut_forward_pass_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cut.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Cut(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        torch.manual_seed(0)\n"
        "        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n\n"
        "    def forward(self, x):\n"
        "        return self.net((x > 0.5).float())\n\n"
        "def build():\n    return Cut()\n"
    )
    with pytest.raises(SystemExit) as done:
        main(["attack", "--model", "cut.py:build", "--attack", "pgd", "--eps", "0.1", "--limit", "64", "--device", "cpu",
              "--adaptive", "off"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: pgd (reference) cannot run: no gradient reaches the input") and "Traceback" not in err
    # with the adaptive evaluation (the default) the cut escalates instead; this untrained model's contract blocks it
    main(["attack", "--model", "cut.py:build", "--attack", "pgd", "--eps", "0.1", "--limit", "64", "--device", "cpu"])
    results = json.loads((tmp_path / "runs" / "attack" / "results.json").read_text())
    assert "model_learned failed" in results["adaptive"]["blocked"]


# ---------------------------------------------------------------- input_scale


def test_input_scale_catches_a_forgotten_normalize_half_half(model, sample):
    """A model trained on Normalize((0.5,), (0.5,)) input, i.e. on 2x − 1, and handed [0, 1] pixels."""
    x, y = sample
    forgot = Head(lambda v: model((v + 1) / 2))
    check = input_scale(forgot, x, y)
    assert check.status == "fail" and check.values["best"] == "[-1, 1]", check.detail
    assert check.values["accuracy_[-1, 1]"] == pytest.approx(rk.evaluate.accuracy(model, x, y))
    assert input_scale(model, x, y).status == "pass"


@pytest.mark.parametrize(
    "pixels, rescaled, n, status, says",
    [
        (0.850, 0.975, 256, "fail", "expects the input normalised"),  # the mild forgotten Normalize(0.5, 0.5)
        (0.141, 0.438, 64, "warn", "beyond sampling noise"),  # inside the z = 4 band, far outside z = 2
        (0.900, 0.950, 256, "warn", "beyond sampling noise"),  # 5 points on 256 images: beyond 2 SE (±4.6%)
        (0.900, 0.925, 10_000, "pass", "within sampling noise"),  # under the 3-point floor, however many images
        (0.953, 0.953, 64, "pass", "rescaled input no more"),
        (0.980, 0.967, 450, "pass", "rescaled input no more"),  # a healthy digits CNN: standardised input scores lower
    ],
)
def test_input_scale_verdicts_follow_the_numbers(pixels, rescaled, n, status, says):
    check = judge_input_scale(pixels, {"standardised": rescaled, "[-1, 1]": 0.05, "0..255": 0.0}, n)
    assert check.status == status and says in check.detail, check.detail
    assert f"{pixels:.1%}" in check.detail and f"{rescaled:.1%}" in check.detail  # the text quotes what it judged


# ---------------------------------------------------------------- label_order


def swap_pairs(y: torch.Tensor, pairs=((1, 7), (3, 8))) -> torch.Tensor:
    out = y.clone()
    for a, b in pairs:
        out[y == a], out[y == b] = b, a
    return out


def test_label_order_names_classes_numbered_in_another_order(model, digits_test):
    x, y = digits_test.x[:256], digits_test.y[:256]
    preds = rk.evaluate.predict(model, x)
    swapped = label_order(preds, swap_pairs(y), 10)
    assert swapped.status == "fail" and "another class order" in swapped.detail
    assert sorted(swapped.values["moved"]) == [(1, 7), (3, 8), (7, 1), (8, 3)]
    assert swapped.values["accuracy_permuted"] > swapped.values["accuracy"] + 0.1
    healthy = label_order(preds, y, 10)
    assert healthy.status == "pass" and healthy.values["moved"] == []


def test_label_order_stays_quiet_on_a_model_that_learned_nothing(digits_train, digits_test):
    """Chance predictions: a permutation fitted on half the images finds nothing on the other half."""
    from robustkit.modelling.models import build_model, model_spec

    torch.manual_seed(0)
    untrained = build_model(model_spec("small_cnn", digits_train.info))
    x, y = digits_test.x[:256], digits_test.y[:256]
    assert label_order(rk.evaluate.predict(untrained, x), y, 10).status == "pass"


def test_label_order_does_not_read_chance_matches_among_many_classes():
    """1000 classes, 128 images: every misclassified image could be 'explained' by some relabelling."""
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 1000, (128,), generator=generator)
    preds = torch.where(torch.rand(128, generator=generator) < 0.7, y, torch.randint(0, 1000, (128,), generator=generator))
    assert label_order(preds, y, 1000).status == "pass"


# ---------------------------------------------------------------- every entry point runs the contract checks


def test_corruption_accuracy_runs_the_contract_checks(model, digits_train, digits_test):
    """Issue 32.9: a model that expects standardised input got corruption numbers with no check firing."""
    flat = digits_train.x.transpose(0, 1).flatten(1)
    mean, std = flat.mean(1).view(1, -1, 1, 1), flat.std(1).view(1, -1, 1, 1)
    wrong = Head(lambda z: model((z * std + mean).clamp(0, 1)))
    data = digits_test.take(96)
    kwargs = {"corruptions": ["gaussian_noise", "contrast"], "severities": [3]}
    result = rk.evaluate.corruption_accuracy(wrong, data, **kwargs)
    statuses = {c.name: c.status for c in result.checks}
    assert statuses["input_scale"] == "fail" and set(statuses) == {"model_learned", "output_head", "input_scale", "label_order"}
    healthy = rk.evaluate.corruption_accuracy(model, data, **kwargs)
    assert {c.status for c in healthy.checks} == {"pass"}


# ---------------------------------------------------------------- budget_units


@pytest.mark.parametrize(
    "eps, norm, shape, status",
    [
        (8 / 255, "l2", (3, 32, 32), "warn"),  # an L∞ budget given to autoattack_l2
        (0.5, "linf", (3, 32, 32), "warn"),  # an L2 budget given to autoattack
        (8 / 255, "l1", (3, 32, 32), "warn"),
        (8 / 255, "linf", (3, 32, 32), "pass"),
        (0.3, "linf", (1, 28, 28), "pass"),  # MNIST's
        (0.5, "l2", (3, 32, 32), "pass"),
        (3.0, "l2", (3, 224, 224), "pass"),  # ImageNet's
        (12.0, "l1", (3, 32, 32), "pass"),
    ],
)
def test_budget_units_warns_of_a_budget_in_another_norms_units(eps, norm, shape, status):
    check = rk.evaluate.budget_units(eps, norm, shape)
    assert check.status == status, check.detail
    if status == "warn":
        assert "8/255 (CIFAR-10)" in check.detail and "0.5 (CIFAR-10)" in check.detail  # the usual values, named


def test_a_budget_in_another_norms_units_reaches_the_results_and_a_warning(model, sample):
    from robustkit.core.errors import RobustkitWarning

    x, y = sample
    with pytest.warns(RobustkitWarning, match="budget_units"):
        result = rk.evaluate.robust_accuracy(rk.attack("pgd", eps=0.5, steps=2), model, x[:32], y[:32])
    assert next(c for c in result.checks if c.name == "budget_units").status == "warn"
    healthy = rk.evaluate.robust_accuracy(rk.attack("pgd", eps=0.1, steps=2), model, x[:32], y[:32])
    assert next(c for c in healthy.checks if c.name == "budget_units").status == "pass"
    diagnosis = rk.diagnose(model, (x, y), attack=rk.attack("pgd_l2", eps=1 / 255, steps=2), sample=32)
    assert diagnosis["budget_units"].status == "warn"


# ---------------------------------------------------------------- forward_optimisation


class Purified(nn.Module):
    """A test-time purifier: a few signed gradient steps lowering the entropy of the model's own
    prediction before classifying (an optimisation inside forward, as in the defenses Croce et al. 2022 broke)."""

    def __init__(self, model: nn.Module, steps: int = 3, step: float = 0.02):
        super().__init__()
        self.model, self.steps, self.step = model, steps, step

    def forward(self, x):
        z = x.detach()
        for _ in range(self.steps):
            with torch.enable_grad():
                z = z.clone().requires_grad_(True)
                p = self.model(z).softmax(1)
                entropy = -(p * p.clamp_min(1e-12).log()).sum()
                (grad,) = torch.autograd.grad(entropy, z)
            z = (z - self.step * grad.sign()).clamp(0, 1).detach()
        return self.model(x + (z - x).detach())  # the attack sees the identity through the purification


def test_forward_optimisation_sees_a_purifier_and_not_a_healthy_model(model, sample):
    x, _ = sample
    check = forward_optimisation(Purified(model), x)
    assert check.status == "warn" and check.values["calls"] == {"torch.autograd.grad": 3}, check.values
    assert "Croce et al. 2022" in check.detail
    assert forward_optimisation(model, x).status == "pass"


def test_diagnose_and_benchmark_run_forward_optimisation_under_any_attack(model, sample):
    x, y = sample
    diagnosis = rk.diagnose(Purified(model), (x, y), attack=rk.attack("pgd", eps=0.1, steps=2), sample=32)
    assert diagnosis["forward_optimisation"].status == "warn"
    bench = rk.evaluate.benchmark(Purified(model), (x[:32], y[:32]), attack="fgsm", eps=0.1, ood=["fakedata"],
                                  detectors=["max_logit"], check_sample=16)  # fmt: skip
    assert {c.name: c.status for c in bench.checks}["forward_optimisation"] == "warn"


# ---------------------------------------------------------------- resume fingerprints (issues 32.5, 30.6)


def test_resume_refuses_another_models_another_budgets_or_other_images_state(model, digits_train, digits_test, tmp_path):
    from robustkit.modelling.models import model_spec
    from robustkit.modelling.train import TrainConfig, train_model

    x, y = digits_test.x[:96], digits_test.y[:96]
    pgd = rk.attack("pgd", eps=0.1, steps=2)
    state = tmp_path / "state.jsonl"
    whole = rk.evaluate.robust_accuracy(pgd, model, x, y, batch_size=16, state=state)
    other, _ = train_model(model_spec("small_cnn", digits_train.info), digits_train, TrainConfig(epochs=1, seed=5),
                           progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="the model's weights differ"):
        rk.evaluate.robust_accuracy(pgd, other, x, y, batch_size=16, state=state)
    with pytest.raises(ValueError, match=r"attack 1 \(pgd\): eps 0.1 there, 0.2 now"):  # the field, both values
        rk.evaluate.robust_accuracy(pgd.with_params(eps=0.2), model, x, y, batch_size=16, state=state)
    with pytest.raises(ValueError, match="attack 1 \\(pgd\\): seed 0 there, 1 now"):
        rk.evaluate.robust_accuracy(pgd.with_params(seed=1), model, x, y, batch_size=16, state=state)
    # other images at the same positions (here: the same ones, a grey level off), classified alike
    moved = (x + torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) / 255).clamp(0, 1)
    assert torch.equal(rk.evaluate.predict(model, moved), rk.evaluate.predict(model, x))
    with pytest.raises(ValueError, match="are not the ones the interrupted run attacked"):
        rk.evaluate.robust_accuracy(pgd, model, moved, y, batch_size=16, state=state)
    again = rk.evaluate.robust_accuracy(pgd, model, x, y, batch_size=16, state=state)  # the same run reads back
    assert again["accuracy"] == whole["accuracy"] and again["attacked"] == 0


# ---------------------------------------------------------------- discontinuous activations (issue 32.2)


def test_discontinuous_activations_trip_the_gradient_free_and_steps_checks(kwta_model, digits_test):
    """PGD leaves ~65% where Square finds ~40%; the gradient checks at a quarter grey level see nothing."""
    d = rk.diagnose(kwta_model, digits_test, attack=rk.attack("pgd", eps=0.1), sample=256)
    assert d.measured["clean_accuracy"] > 0.9 and d["gradient_consistency"].status == "pass"
    assert d["gradient_free"].status in ("warn", "fail"), d["gradient_free"].detail
    assert d["incomplete_optimisation"].status == "fail"


# ---------------------------------------------------------------- OOD: fit data and input scale (issues 32.7, 32.8)


def test_a_detector_fitted_on_the_test_images_it_scores_is_flagged(model, digits_train, digits_test):
    test, noise = digits_test.x[:200], torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    on_test = rk.evaluate.ood(rk.detector("mahalanobis").fit(model, digits_test), test, noise)
    check = next(c for c in on_test.checks if c.name.startswith("fit_overlap"))
    assert check.status == "fail" and check.values["found"] == 200 and "training split" in check.detail
    on_train = rk.evaluate.ood(rk.detector("mahalanobis").fit(model, digits_train), test, noise)
    assert next(c for c in on_train.checks if c.name.startswith("fit_overlap")).status == "pass"
    logits_only = rk.evaluate.ood(rk.detector("energy").fit(model), test, noise)  # learns nothing: nothing to compare
    assert not any(c.name.startswith("fit_overlap") for c in logits_only.checks)


def test_an_ood_set_on_another_scale_is_flagged(model, digits_train, digits_test):
    """Issue 32.8: OOD images in [0, 1/255] (divided by 255 twice) separate by scale, not content."""
    test, other = digits_test.x[:200], digits_test.x[200:400].flip(-1)  # mirrored digits: a near-OOD set
    detector = rk.detector("mahalanobis").fit(model, digits_train)
    wrong = rk.evaluate.ood(detector, test, other / 255)
    check = next(c for c in wrong.checks if c.name.startswith("input_range"))
    assert check.status == "fail" and "OOD images are on another scale" in check.detail
    assert set(check.values["median_peak"]) == {"fit", "ID", "OOD"}
    right = rk.evaluate.ood(detector, test, other)
    assert next(c for c in right.checks if c.name.startswith("input_range")).status == "pass"
    noise = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # noise reaches 1 as digits do
    assert next(c for c in rk.evaluate.ood(detector, test, noise).checks if c.name.startswith("input_range")).ok
