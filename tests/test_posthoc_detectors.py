"""The post-hoc detectors of robustkit.detectors.posthoc: each equals pytorch-ood called directly on the same
model and data, separates digits from noise, refuses bad parameters, and needs a head it can find."""

import numpy as np
import pytest
import torch
from pytorch_ood import detector as pood
from torch.utils.data import DataLoader, TensorDataset

import robustkit as rk
from robustkit.core.errors import NotFittedError
from robustkit.evaluate import ood, ood_metrics

NEW = [
    "rmd", "react", "ash", "scale", "dice", "she", "nnguide", "fdbd", "nci", "gradnorm",
    "kl_matching", "gen", "temperature_scaling",
]  # fmt: skip
FEATURE_READERS = [n for n in NEW if n not in ("kl_matching", "gen", "temperature_scaling")]

# AUROC of digits test (ID) against 200 noise images, measured on the conftest model (lowest: nci 0.94,
# kl_matching 0.96, temperature_scaling 0.97, rmd 0.98; the others ≥ 0.975)
FLOOR = {"nci": 0.88, "kl_matching": 0.9, "temperature_scaling": 0.9}


def direct(name, model):
    """The pytorch-ood detector built on the model's own parts (its features method and head), unfitted."""
    features, head = model.features, model.net.head
    maps = lambda x: features(x)[:, :, None, None]  # noqa: E731  ASH and SCALE take N×C×H×W feature maps
    flat = lambda m: head(m.flatten(1))  # noqa: E731
    return {
        "rmd": lambda: pood.RMD(features),
        "react": lambda: pood.ReAct(backbone=features, head=head, percentile=0.9),
        "ash": lambda: pood.ASH(backbone=maps, head=flat, variant="ash-b", percentile=0.9),
        "scale": lambda: pood.SCALE(backbone=maps, head=flat, percentile=0.85),
        "dice": lambda: pood.DICE(features, w=head.weight, b=head.bias, p=0.9),
        "she": lambda: pood.SHE(features, head),
        "nnguide": lambda: pood.NNGuide(features, head, k=100),
        "fdbd": lambda: pood.fDBD(features, head),
        "nci": lambda: pood.NCI(features, head, alpha=0.0001),
        "gradnorm": lambda: pood.GradNorm(model, param_filter=lambda n: n == "net.head.weight"),
        "kl_matching": lambda: pood.KLMatching(model),
        "gen": lambda: pood.GEN(model, gamma=0.1, M=100),
        "temperature_scaling": lambda: pood.TemperatureScaling(model),
    }[name]()


@pytest.fixture(scope="module")
def noise():
    return rk.load_dataset("fakedata", shape=(1, 8, 8), size=200)


@pytest.fixture(scope="module")
def fitted(model, digits_train):
    """Every new detector fitted on the digits training set (shared by the tests below, which do not refit)."""
    model.eval()
    return {n: rk.detector(n).fit(model, digits_train) for n in NEW}


@pytest.mark.parametrize("name", NEW)
def test_equals_pytorch_ood_and_separates_digits_from_noise(model, digits_train, digits_test, noise, fitted, name):
    ours = fitted[name]
    theirs = direct(name, model)
    loader = DataLoader(TensorDataset(digits_train.x, digits_train.y), batch_size=512)
    if name in ("kl_matching", "temperature_scaling"):
        with torch.no_grad():
            theirs.fit_logits(model(digits_train.x), digits_train.y)
    elif name not in ("ash", "scale", "gradnorm", "gen"):
        with torch.no_grad():
            theirs.fit(loader)
    got, n = ours.score(digits_test.x), 150  # pytorch-ood on the first 150 (its GradNorm is per image)
    with torch.no_grad() if name != "gradnorm" else torch.enable_grad():
        expected = theirs.predict(digits_test.x[:n]).detach()
    # relative to the scores' scale: 0 or ~1e-7 measured; rmd 1.1e-4, its score a small difference of two
    # Mahalanobis distances, fitted in float64 (ours) against float32 (pytorch-ood's fit_features)
    error = float((got[:n] - expected.float()).abs().max() / expected.abs().max())
    assert got.shape == (len(digits_test.x),) and error < (1e-3 if name == "rmd" else 1e-5), error
    auroc = ood_metrics(got.numpy(), ours.score_batches(noise.x))["AUROC"]
    assert auroc > FLOOR.get(name, 0.95), auroc


def test_shared_forward_pass_matches_one_at_a_time(model, digits_test, fitted):
    """ood() with all new detectors: the same scores as each alone, one model pass per data set."""
    detectors = fitted
    x, noise = digits_test.x[:200], torch.rand(50, 1, 8, 8)
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        together = ood(detectors, x, noise, batch_size=1000)
    finally:
        handle.remove()
    assert len(calls) == 2  # one shared pass for ID, one for OOD
    for n, det in detectors.items():
        assert np.allclose(together[n].id_scores, det.score_batches(x), rtol=1e-5, atol=1e-5), n


@pytest.mark.parametrize("name", ["react", "dice", "she", "gradnorm", "rmd"])
def test_features_and_head_given_match_the_found_head(model, digits_train, digits_test, fitted, name):
    x = digits_test.x[:64]
    found = fitted[name].score(x)
    given = rk.detector(name, features=model.features, head=model.net.head) if name != "rmd" else (
        rk.detector(name, features=model.features)
    )
    assert given.reads() is None  # features= runs its own pass
    assert torch.allclose(given.fit(model, digits_train).score(x), found, rtol=1e-5, atol=1e-4)


class Tempered(torch.nn.Module):
    """Logits divided by a temperature after the head: no layer outputs them, so no head can be found."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.body(x)) / 2


@pytest.mark.parametrize("name", FEATURE_READERS)
def test_a_model_without_a_findable_head_is_refused_naming_features(name):
    data = (torch.rand(40, 1, 8, 8), torch.arange(40) % 10)
    with pytest.raises(ValueError, match="features="):
        rk.detector(name).fit(Tempered(), data)
    if name != "rmd":  # a head that does not map the features to the logits is refused too
        net = Tempered()
        with pytest.raises(ValueError, match="does not map features"):
            rk.detector(name, features=net.body, head=net.head).fit(net, data)


@pytest.mark.parametrize(
    ("name", "params", "error", "match"),
    [
        ("react", {"percentile": 90}, ValueError, r"percentile=90 is out of range: it must be ≥ 0 and ≤ 1"),
        ("ash", {"percentile": 1.0}, ValueError, "must be below 1"),
        ("ash", {"variant": "ash_s"}, ValueError, "is not one of 'ash-b', 'ash-p', 'ash-s'"),
        ("scale", {"percentile": 1}, ValueError, "must be below 1"),
        ("dice", {"p": 1.0}, ValueError, "must be below 1"),
        ("dice", {"p": -0.1}, ValueError, "out of range"),
        ("nnguide", {"k": 0}, ValueError, "out of range"),
        ("nnguide", {"k": 2.5}, TypeError, "must be int"),
        ("gen", {"gamma": 0}, ValueError, "must be > 0"),
        ("gen", {"m": 0}, ValueError, "out of range"),
        ("nci", {"alpha": -1}, ValueError, "out of range"),
        ("gradnorm", {"temperature": 0}, ValueError, "must be > 0"),
        ("she", {"k": 3}, TypeError, "she has no parameter k; valid parameters: features, head"),
    ],
)
def test_bad_parameters_are_refused(name, params, error, match):
    with pytest.raises(error, match=match):
        rk.detector(name, **params)


def test_fit_data_errors_are_explained(model, digits_train):
    small = (digits_train.x[:50], digits_train.y[:50])
    with pytest.raises(ValueError, match=r"k=100 nearest neighbours need at least as many fit images, got 50"):
        rk.detector("nnguide").fit(model, small)
    no_nine = digits_train.y != 9
    with pytest.raises(ValueError, match=r"she needs every one of the model's 10 classes.*classes \[9\]"):
        rk.detector("she").fit(model, (digits_train.x[no_nine], digits_train.y[no_nine]))
    with pytest.raises(ValueError, match=r"label 12 in the fit data, but the model has 10 logits"):
        rk.detector("temperature_scaling").fit(model, (digits_train.x[:20], torch.full((20,), 12)))
    for name in ("kl_matching", "ash", "rmd"):
        with pytest.raises(ValueError, match="training data"):
            rk.detector(name).fit(model)
        with pytest.raises(NotFittedError, match="fit"):
            rk.detector(name).score(digits_train.x[:4])


def test_fit_and_score_leave_the_model_as_it_was(model, digits_train):
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.train()
    try:
        for name in ("gradnorm", "dice", "react"):
            det = rk.detector(name).fit(model, digits_train)
            det.score(digits_train.x[:32])
            assert model.training and all(p.requires_grad for p in model.parameters()), name
            for g, p in zip(grads, model.parameters(), strict=True):
                assert (g is None and p.grad is None) or torch.equal(g, p.grad), name
    finally:
        model.eval()
