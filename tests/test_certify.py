"""Randomised smoothing (Cohen et al. 2019): PREDICT and CERTIFY against hand-computed values, ART's
implementation, batch-size determinism, the certified_vs_empirical check, the CLI and the recipe."""

import dataclasses
import json
import math

import pytest
import torch
from scipy.stats import beta, norm
from test_report_values import check_counts, report_problems  # tests/ is on sys.path (rootdir conftest)
from torch import nn

from robustkit.defenses.smoothing import (
    ABSTAIN,
    NOISE_CHUNK,
    GaussianAugmentation,
    SmoothedClassifier,
    _noisy,
    art_certify,
    art_predict,
    certify,
    lower_confidence_bound,
    max_radius,
    predict,
    radius,
)
from robustkit.evaluate import certified_accuracy, certified_vs_empirical, empirical_accuracy, smoothing_learned
from robustkit.evaluate.checks.base import noise_tolerance
from robustkit.modelling.train import TrainConfig
from robustkit.registry import defense


class Constant(nn.Module):
    """Always class ``k`` of 10, whatever the noise."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.k = k
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = torch.full((len(x), 10), -1.0) + self.w
        out[:, self.k] = 1.0
        return out


class CoinFlip(nn.Module):
    """Class 0 or 1 by the sign of the first pixel's offset from 0.5: a fair coin under noise at x = 0.5."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        s = (x.flatten(1)[:, 0] - 0.5) * self.w
        return torch.stack([s, -s, *(torch.full_like(s, -9.0) for _ in range(8))], 1)


@pytest.fixture(scope="module")
def noisy_model(model, digits_train):
    """The conftest model fine-tuned for one epoch on digits with σ = 0.25 noise (the base classifier)."""
    trainer = GaussianAugmentation(sigma=0.25, finetune=True, train_config=TrainConfig(epochs=1, lr=1e-3), progress=False)
    return trainer.apply(model, digits_train)


# ---------------------------------------------------------------- the procedures by hand


def test_radius_is_sigma_times_the_inverse_normal_of_the_clopper_pearson_bound():
    # one-sided (1 - alpha) Clopper-Pearson lower bound = the alpha quantile of Beta(k, n - k + 1)
    for k, n, alpha in ((100, 100, 0.001), (830, 1000, 0.001), (61, 100, 0.01)):
        assert lower_confidence_bound(k, n, alpha) == pytest.approx(beta.ppf(alpha, k, n - k + 1), rel=1e-9)
    # all n votes: the bound is alpha^(1/n) exactly; 0.001^(1/100) = 0.93325, Phi^-1 = 1.5005
    assert lower_confidence_bound(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-12)
    assert radius(100, 100, 0.5, 0.001) == pytest.approx(0.5 * 1.50048, abs=1e-4)
    assert max_radius(0.5, 100, 0.001) == pytest.approx(radius(100, 100, 0.5, 0.001), rel=1e-12)
    assert radius(830, 1000, 0.25, 0.001) == pytest.approx(0.25 * norm.ppf(beta.ppf(0.001, 830, 171)), rel=1e-9)


def test_certify_a_constant_classifier_reaches_the_largest_radius():
    x = torch.rand(5, 1, 8, 8)
    c = certify(Constant(3), x, sigma=0.5, n0=20, n=100, alpha=0.001)
    assert c.prediction.tolist() == [3] * 5 and c.count.tolist() == [100] * 5
    assert torch.allclose(c.radius, torch.full((5,), max_radius(0.5, 100, 0.001), dtype=torch.float64))
    assert predict(Constant(3), x, sigma=0.5, n=50).tolist() == [3] * 5


def test_a_tie_between_two_classes_abstains():
    x = torch.full((6, 1, 8, 8), 0.5)  # under noise the first pixel is above or below 0.5 with probability 1/2
    c = certify(CoinFlip(), x, sigma=0.25, n0=50, n=400, alpha=0.001)
    assert (c.prediction == ABSTAIN).all() and (c.radius == 0).all()
    assert ((c.count > 120) & (c.count < 280)).all()  # about half of the 400 votes each
    assert (predict(CoinFlip(), x, sigma=0.25, n=400, alpha=0.001) == ABSTAIN).all()
    assert set(predict(CoinFlip(), x, sigma=0.25, n=400, alpha=None).tolist()) <= {0, 1}  # no abstention asked


def test_results_do_not_depend_on_the_batch_size_or_the_other_images(model, digits_test):
    x = digits_test.x[:6]
    n = NOISE_CHUNK + 37  # the n samples span two noise chunks
    a = certify(model, x, sigma=0.25, n0=30, n=n, seed=5, batch_size=4096)
    b = certify(model, x, sigma=0.25, n0=30, n=n, seed=5, batch_size=123)
    assert torch.equal(a.count, b.count) and torch.equal(a.prediction, b.prediction) and torch.equal(a.radius, b.radius)
    part = certify(model, x[2:5], sigma=0.25, n0=30, n=n, seed=5, index=torch.arange(2, 5), batch_size=77)
    assert torch.equal(part.count, a.count[2:5]) and torch.equal(part.radius, a.radius[2:5])
    other = certify(model, x, sigma=0.25, n0=30, n=n, seed=6)
    assert not torch.equal(other.count, a.count)  # the seed matters
    curve = [certified_accuracy(model, digits_test.take(12), sigma=0.25, n0=30, n=200, batch_size=b).accuracy
             for b in (64, 1000)]  # fmt: skip
    assert curve[0] == curve[1]


def test_the_noise_is_the_papers():
    x = torch.full((1, 1, 8, 8), 0.2)
    noise = torch.cat([chunk for _, _, chunk in _noisy(x, torch.arange(1), 0.5, (3000,), 0)]) - 0.2
    assert noise.shape == (3000, 1, 8, 8) and noise.mean().abs() < 0.01 and abs(noise.std() - 0.5) < 0.01
    assert (0.2 + noise).min() < 0  # unclipped, as in the paper


# ---------------------------------------------------------------- ART's implementation


def test_art_gives_the_reference_results_on_the_same_noise(model, digits_test, monkeypatch):
    """ART's certify and predict, fed the reference's noise sample for sample, return what the reference does."""
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    x, sigma, n0, n = digits_test.x[:8], 0.5, 40, 300
    ours = certify(model, x, sigma, n0, n, seed=1)
    draws = [chunk.numpy() for _, _, chunk in _noisy(x, torch.arange(len(x)), sigma, (n0, n), 1)]
    queue = iter(draws)  # ART asks per image for n0 then n noisy copies: the reference's order
    monkeypatch.setattr(PyTorchRandomizedSmoothing, "_noisy_samples", lambda self, xi, n=None: next(queue))
    theirs = art_certify(model, x, sigma, n0, n, seed=1)
    assert torch.equal(theirs.prediction, ours.prediction)
    assert torch.allclose(theirs.radius, ours.radius, rtol=0, atol=1e-12)
    assert (ours.prediction != ABSTAIN).sum() >= 4 and (ours.radius > 0).sum() >= 4  # a comparison of something
    draws = [chunk.numpy() for _, _, chunk in _noisy(x, torch.arange(len(x)), sigma, (n,), 2)]
    queue = iter(draws)
    assert torch.equal(art_predict(model, x, sigma, n, seed=2), predict(model, x, sigma, n, seed=2))


def test_art_with_its_own_noise_agrees_within_sampling_noise(noisy_model, digits_test):
    """ART draws numpy noise, so votes differ; where the reference's class has ≥ 80% of its n votes, ART (n0 = 100
    votes) selects the same class (P(not) < 1e-12), and both vote counts are Binomial(n, p) with the same p:
    they differ by more than 6 standard errors of the difference with probability below 1e-8 per image."""
    x, sigma, n0, n = digits_test.x[:12], 0.25, 100, 200
    ours = certify(noisy_model, x, sigma, n0, n, seed=3)
    theirs = art_certify(noisy_model, x, sigma, n0, n, seed=3)
    again = art_certify(noisy_model, x, sigma, n0, n, seed=3)
    assert torch.equal(theirs.radius, again.radius)  # seeded per image: ART's run repeats
    by_count = torch.tensor([radius(k, n, sigma, 0.001) for k in range(n + 1)], dtype=torch.float64)
    clear = (ours.count >= 0.8 * n).nonzero().flatten().tolist()
    assert len(clear) >= 8
    for i in clear:
        assert theirs.prediction[i] == ours.prediction[i]
        k_art = int((by_count - theirs.radius[i]).abs().argmin())  # ART's count, from its radius
        p = max(k_art, int(ours.count[i])) / n
        assert abs(k_art - int(ours.count[i])) <= 6 * math.sqrt(2 * n * max(p * (1 - p), 1 / n)) + 2, i


# ---------------------------------------------------------------- certified accuracy and the check


def test_certified_accuracy_is_a_falling_curve_below_the_smoothed_clean_accuracy(noisy_model, digits_test):
    data = digits_test.take(60)
    cert = certified_accuracy(noisy_model, data, sigma=0.25, n0=50, n=300, radii=[0, 0.1, 0.3, 0.5, 2.0])
    assert cert.images == 60 and cert.radii == [0, 0.1, 0.3, 0.5, 2.0]
    assert all(a >= b for a, b in zip(cert.accuracy, cert.accuracy[1:], strict=False))
    assert cert.accuracy[-1] == 0 and cert.max_radius < 2.0  # beyond what n samples can certify
    assert cert.accuracy[0] == int((cert.prediction == cert.labels).sum()) / 60
    assert cert.abstained == int((cert.prediction == ABSTAIN).sum()) and 0 <= cert.abstain_rate < 0.5
    assert cert.curve([0.3]) == [cert.accuracy[2]]
    clean = (predict(noisy_model, data.x, 0.25, n=300, alpha=None, seed=9) == data.y).double().mean().item()
    assert cert.accuracy[0] <= clean + noise_tolerance(cert.accuracy[0], clean, 60, 4.0)
    assert cert.accuracy[0] >= 0.7  # the base classifier works under its noise


def test_the_check_passes_a_healthy_curve_and_fails_a_radius_bug(noisy_model, digits_test):
    data, radii = digits_test.take(40), [0.0, 0.25, 0.5, 1.0]
    cert = certified_accuracy(noisy_model, data, sigma=0.25, n0=50, n=200, radii=radii)
    emp = empirical_accuracy(noisy_model, data, sigma=0.25, radii=radii, steps=8, samples=8, n=100)
    assert emp.images == 40 and emp.accuracy == sorted(emp.accuracy, reverse=True)
    healthy = certified_vs_empirical(radii, cert.accuracy, emp.accuracy, 40)
    assert healthy.status == "pass", healthy.detail
    # a radius bug: the certificates computed with σ = 1.0 while the classifier was smoothed with 0.25
    buggy = dataclasses.replace(cert, radius=cert.radius * 4)
    bad = certified_vs_empirical(radii, buggy.curve(radii), emp.accuracy, 40)
    assert bad.status == "fail" and "another σ" in bad.detail and bad.values["excess"] > 0.2
    assert bad.values["radii_above"] and set(bad.values["radii_above"]) <= {0.5, 1.0}


def test_the_check_allows_for_sampling_noise():
    radii = [0.0, 0.5]
    assert certified_vs_empirical(radii, [0.90, 0.52], [0.90, 0.50], 100).status == "pass"  # 2 of 100 images
    warn = certified_vs_empirical(radii, [0.90, 0.70], [0.90, 0.50], 100)  # 20 points: beyond 2, within 4 s.e.
    assert warn.status == "warn" and warn.values["radius"] == 0.5
    assert certified_vs_empirical(radii, [0.90, 0.80], [0.90, 0.50], 100).status == "fail"
    with pytest.raises(ValueError, match="one certified and one empirical"):
        certified_vs_empirical(radii, [0.9], [0.9, 0.5], 100)
    with pytest.raises(ValueError, match="fraction"):
        certified_vs_empirical(radii, [90, 50], [0.9, 0.5], 100)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": 0.0}, "sigma=0.0 must be a positive number"),
        ({"sigma": -0.25}, "sigma=-0.25 must be a positive number"),
        ({"n0": 500, "n": 100}, "n0=500 is larger than n=100"),
        ({"alpha": 1.0}, "alpha=1.0 must lie strictly between 0 and 1"),
        ({"alpha": 0}, "alpha=0 must lie strictly between 0 and 1"),
        ({"n": 0}, "n=0 must be an integer ≥ 1"),
        ({"radii": [-0.5]}, "radii=\\[-0.5\\] must be a non-empty list"),
        ({"backend": "foolbox"}, "backend='foolbox' is not one of reference, art"),
    ],
)
def test_bad_parameters_give_clear_errors(model, digits_test, kwargs, message):
    args = {"sigma": 0.25, "n0": 10, "n": 20, **kwargs}
    with pytest.raises(ValueError, match=message):
        certified_accuracy(model, digits_test.take(2), **args)


def test_bad_parameters_of_the_module_and_the_defense():
    with pytest.raises(ValueError, match="sigma=-1 must be a positive number"):
        SmoothedClassifier(Constant(), sigma=-1)
    with pytest.raises(ValueError, match="gaussian_augmentation: sigma=0 is out of range"):
        defense("gaussian_augmentation", sigma=0)
    with pytest.raises(ValueError, match=r"call apply\(model, train_data\)"):
        defense("gaussian_augmentation").apply(Constant())


def test_smoothed_classifier_averages_softmax_over_the_noise(model, digits_test):
    x = digits_test.x[:6]
    smoothed = SmoothedClassifier(model, sigma=0.25, samples=64)
    torch.manual_seed(0)
    out = smoothed(x)
    assert out.shape == (6, 10) and torch.allclose(out.exp().sum(1), torch.ones(6), atol=1e-5)  # log-probabilities
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(smoothed(x)[:, 0].sum(), x)
    assert grad.abs().sum() > 0  # differentiable: what PGD-L2 with EOT follows
    votes = predict(model, digits_test.x[:6], 0.25, n=400, alpha=None)
    assert (out.argmax(1) == votes).float().mean() >= 5 / 6


def test_gaussian_augmentation_adds_the_noise_it_declares():
    trainer = defense("gaussian_augmentation", sigma=0.5)
    x = torch.full((64, 1, 8, 8), 0.5)
    noisy, _ = trainer.batch_hook(Constant(), x, torch.zeros(64, dtype=torch.int64))
    assert abs(float((noisy - x).std()) - 0.5) < 0.02 and float((noisy - x).mean()) == pytest.approx(0, abs=0.02)
    assert trainer.paper.startswith("Cohen, Rosenfeld & Kolter 2019")


# ---------------------------------------------------------------- the CLI and the recipe


def test_certify_command_writes_a_report(tmp_path, noisy_model):
    from typer.testing import CliRunner

    from robustkit.app.cli import app
    from robustkit.modelling.checkpoint import save_checkpoint

    weights = tmp_path / "m.pt"
    save_checkpoint(weights, noisy_model, noisy_model.robustkit_spec, {})
    args = ["certify", "--weights", str(weights), "--n", "100", "--n0", "20", "--limit", "20", "--radii", "0,0.25",
            "--steps", "3", "--eot", "4", "--judge", "50", "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    report = (tmp_path / "run" / "report.md").read_text()
    assert results["certification"]["images"] == 20 and results["certification"]["n"] == 100
    assert "certified.png" in results["run"]["figures"] and "](certified.png)" in report
    assert report_problems(report) == [] and check_counts(report, results) == []
    names = [c["name"].removesuffix(" (20 images)") for c in results["checks"]]
    assert names[:5] == ["model_learned", "output_head", "input_scale", "label_order", "smoothing_learned"]
    assert names[-1] == "certified_vs_empirical" and "gradients_available" in names
    assert {c["status"] for c in results["checks"]} == {"pass"}
    assert f"base model without noise {results['certification']['base_accuracy']:.3f}" in result.output
    first = results["certification"]["accuracy"][0]
    assert f"| 0 | {first:.3f} |" in report


def test_recipe_on_digits(tmp_path):
    from robustkit.app.recipes import load_recipe
    from robustkit.app.runner import RecipeOptions

    recipe = load_recipe("certified-vs-empirical")
    options = RecipeOptions(dataset="digits", epochs=3, out=tmp_path / "run", progress=False)
    folder = recipe.run(options, images=30, n=100, n0=20, steps=4, eot=4, judge=40, radii="0,0.25,0.5")
    results = json.loads((folder / "results.json").read_text())
    report = (folder / "report.md").read_text()
    assert [row["sigma"] for row in results["sigmas"]] == [0.12, 0.25, 0.5] and results["images"] == 30
    assert report_problems(report) == [] and check_counts(report, results) == []
    assert recipe.findings(recipe.numbers(results)) == results["findings"]
    assert all(sentence in report for sentence in results["findings"])
    names = {c["name"].split(" (")[0] for c in results["checks"]}
    assert {"model_learned", "certified_vs_empirical"} <= names
    assert report.index("## Sanity checks") < report.index("## Findings") and "**What to look at.**" in report
    assert "](certified_vs_empirical.png)" in report and (folder / "certified_vs_empirical.png").stat().st_size > 1000
    for row in results["sigmas"]:  # n = 100 caps the radius at σ·Φ⁻¹(0.001^(1/100)) ≈ 1.5σ
        assert row["max_radius"] == pytest.approx(1.50048 * row["sigma"], abs=1e-4)
        assert all(c == 0 for r, c in zip(row["radii"], row["certified"], strict=True) if r > row["max_radius"])


WORKER = """
import json, sys
import torch, torch.distributed as dist
import robustkit as rk
from robustkit.modelling.models import build_model
rank, init, weights, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
saved = torch.load(weights)
model = build_model(saved["spec"])
model.load_state_dict(saved["state"])
test = rk.load_dataset("digits", "test", limit=21)
cert = rk.evaluate.certified_accuracy(model.eval(), test, sigma=0.25, n0=20, n=100, seed=4)
json.dump({"accuracy": cert.accuracy, "radius": cert.radius.tolist(), "images": cert.images}, open(out, "w"))
dist.destroy_process_group()
"""


def test_two_gloo_ranks_certify_what_one_process_does(model, digits_test, tmp_path):
    import subprocess
    import sys

    torch.save({"spec": model.robustkit_spec, "state": model.state_dict()}, tmp_path / "m.pt")
    (tmp_path / "worker.py").write_text(WORKER)
    worker = [sys.executable, str(tmp_path / "worker.py")]
    files = [str(tmp_path / "init"), str(tmp_path / "m.pt")]
    ranks = [
        subprocess.Popen([*worker, str(r), *files, str(tmp_path / f"{r}.json")], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]
    try:
        one = certified_accuracy(model, digits_test.take(21), sigma=0.25, n0=20, n=100, seed=4)
        for proc in ranks:
            output, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, output[-3000:]
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for r in range(2):  # every rank returns the whole: 21 images split 11 / 10
        got = json.loads((tmp_path / f"{r}.json").read_text())
        assert got["images"] == 21 and got["accuracy"] == one.accuracy and got["radius"] == one.radius.tolist()


# ---------------------------------------------------------------- the base model's checks (issues 30.3, 32.9, 32.10, 33.4)


def test_smoothing_a_model_never_trained_with_noise_fails_its_check(model, noisy_model, digits_test):
    """σ = 1 drowns the plain digits CNN: its vote is constant, 'certified' at every radius (issue 30.3)."""
    data = digits_test.take(40)
    plain = certified_accuracy(model, data, sigma=1.0, n0=20, n=100, radii=[0, 0.25])
    check = next(c for c in plain.checks if c.name == "smoothing_learned")
    assert check.status == "fail" and "gaussian_augmentation" in check.detail, check.detail
    assert plain.base_accuracy > 0.9 and check.values["smoothed_accuracy"] < 0.2
    trained = certified_accuracy(noisy_model, data, sigma=0.25, n0=20, n=100, radii=[0, 0.25])
    assert next(c for c in trained.checks if c.name == "smoothing_learned").status == "pass"


@pytest.mark.parametrize(
    "smoothed, base, n, status",
    [(0.06, 0.98, 50, "fail"), (0.14, 0.98, 50, "fail"), (0.45, 0.98, 50, "warn"), (0.80, 0.85, 50, "pass"),
     (0.47, 0.40, 100, "pass")],  # a σ = 1 model: the base alone, on clean images, does worse than its vote
)  # fmt: skip
def test_smoothing_learned_verdicts_follow_the_numbers(smoothed, base, n, status):
    check = smoothing_learned(smoothed, base, 10, n, 0.25)
    assert check.status == status and f"{smoothed:.1%}" in check.detail and f"{base:.1%}" in check.detail


class Rounded(nn.Module):
    """Pixels rounded to 8 grey levels before the classifier: its gradient is zero almost everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 7) / 7)


class StraightThroughRounded(Rounded):
    """`Rounded` with the rounding's gradient written by hand as the identity (BPDA): the same function."""

    def forward(self, x):
        return self.model(x + (torch.round(x * 7) / 7 - x).detach())


def test_the_empirical_curve_reports_a_base_classifier_that_masks_gradients(noisy_model, digits_test):
    """certified < empirical holds, so certified_vs_empirical passes; the base's own checks do not, and the attack
    then also runs through BPDA, giving the number a hand-written straight-through attack gives (issue 32.10)."""
    data = digits_test.take(48)
    options = {"sigma": 0.25, "radii": [0, 0.5, 1.0], "steps": 5, "samples": 4, "n": 20}
    masked = empirical_accuracy(Rounded(noisy_model), data, **options)
    assert {c.name: c.status for c in masked.checks}["gradients_available"] == "fail"
    assert "identity past model" in masked.attack["bpda"]
    by_hand = empirical_accuracy(StraightThroughRounded(noisy_model), data, **options)
    assert by_hand.first_accuracy is None and "bpda" not in by_hand.attack  # its gradients pass: not flagged
    first = masked.first_accuracy
    assert first[0] == masked.accuracy[0] == by_hand.accuracy[0]  # radius 0: no attack
    assert all(a <= f for a, f in zip(masked.accuracy, first, strict=True))  # the worst case over both attacks
    assert first[2] - masked.accuracy[2] >= 0.2, (first, masked.accuracy)  # the plain attack's number was wrong
    assert all(abs(a - b) <= 0.05 for a, b in zip(masked.accuracy, by_hand.accuracy, strict=True)), (masked.accuracy, by_hand.accuracy)
    healthy = empirical_accuracy(noisy_model, data, sigma=0.25, radii=[0, 0.5], steps=3, samples=2, n=20)
    assert [c.status for c in healthy.checks] == ["pass"] * 3 and healthy.first_accuracy is None
    cert = certified_accuracy(Rounded(noisy_model), data, sigma=0.25, radii=[0, 0.5, 1.0], n0=10, n=20)
    report = "\n".join(cert.markdown(masked))
    assert f"PGD-L2 alone would have read 0: {first[0]:.3f}, 0.5: {first[1]:.3f}, 1: {first[2]:.3f}" in report
    assert f"| 1 | {cert.accuracy[2]:.3f} | {masked.accuracy[2]:.3f} |" in report


def test_the_certify_command_reports_a_probability_head_and_strict_exits_3(tmp_path, noisy_model):
    """Issue 33.4: in results.json and report.md, not a one-off Python warning; --strict honours it."""
    from robustkit.app.cli import main

    torch.save(nn.Sequential(noisy_model, nn.Softmax(1)), tmp_path / "probabilities.pt")
    args = ["certify", "--weights", str(tmp_path / "probabilities.pt"), "--unsafe-pickle", "--n", "50", "--n0", "10",
            "--limit", "12", "--radii", "0,0.25", "--no-attack", "--out", str(tmp_path / "run"), "--strict"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 3
    statuses = {c["name"]: c["status"] for c in json.loads((tmp_path / "run" / "results.json").read_text())["checks"]}
    assert statuses["output_head (12 images)"] == "fail"
    assert "output_head (12 images) | **FAIL**" in (tmp_path / "run" / "report.md").read_text()
