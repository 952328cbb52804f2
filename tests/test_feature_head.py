"""Feature detectors read the input of the layer that really produces the logits (issue 23).

Every variant below holds the trained digits model's own layers, so the right features are
``model.features(x)`` and every feature detector must score exactly as on the model itself.
"""

import pytest
import torch
from torch import nn

import robustkit as rk
from robustkit.detectors.ood import find_head, last_linear, logits_and_features, penultimate

FEATURE_DETECTORS = ["mahalanobis", "vim", "knn"]


class Variant(nn.Module):
    """The digits model's layers, the head registered *first*; ``extra`` decides what else runs."""

    def __init__(self, model, extra: str = ""):
        super().__init__()
        self.head = model.net.head
        self.normalize, self.body = model.normalize, model.net.body
        self.extra = extra
        if extra == "side_branch":  # a Linear registered last and called after the head, same output shape
            self.aux = nn.Linear(model.net.body[6].in_features, model.net.head.out_features)
        if extra == "never_called":
            self.unused = nn.Linear(4, 4)
        self.side: torch.Tensor | None = None

    def forward(self, x):
        pooled = self.body[:6](self.normalize(x))
        z = self.body[6:](pooled)
        if self.extra == "shared_head":  # the head also runs on other features before the logits
            self.side = self.head(z.flip(1))
        logits = self.head(z)
        if self.extra == "side_branch":
            self.side = self.aux(pooled)
        if self.extra == "temperature":
            return logits / 2.0
        if self.extra == "times_one":
            return logits * 1
        return logits


def _scores(name, net, train, x, **params):
    return rk.detector(name, **params).fit(net, train).score(x)


@pytest.fixture(scope="module")
def reference(model, digits_train, digits_test):
    """Each feature detector's scores on the model itself."""
    x = digits_test.x[:120]
    return x, {name: _scores(name, model, digits_train, x) for name in FEATURE_DETECTORS}


@pytest.mark.parametrize("extra", ["", "side_branch", "never_called", "shared_head", "times_one"])
def test_scores_match_the_model_whatever_the_order_and_extra_layers(model, digits_train, reference, extra):
    x, expected = reference
    net = Variant(model, extra).eval()
    assert last_linear(net) is not model.net.head  # the registration order points elsewhere
    head, logits, features = find_head(net, x)
    assert head.linear is model.net.head and head.call == (1 if extra == "shared_head" else 0)
    with torch.no_grad():
        assert torch.equal(features, model.features(x)) and torch.equal(logits, model(x))
        assert torch.equal(penultimate(net, x), model.features(x))
    dets = {name: rk.detector(name).fit(net, digits_train) for name in FEATURE_DETECTORS}
    shared = rk.evaluate.ood(list(dets.values()), x, x[:10])  # one forward pass for all three, read at the head
    for name, det in dets.items():
        assert torch.allclose(det.score(x), expected[name], rtol=1e-5, atol=1e-5), name
        assert torch.allclose(torch.from_numpy(shared[name].id_scores), expected[name], rtol=1e-5, atol=1e-5), name


def test_healthy_model_scores_equal_pytorch_ood_on_the_true_features(model, digits_train, digits_test):
    from pytorch_ood.detector import KNN, Mahalanobis, ViM

    x = digits_test.x[:120]
    with torch.no_grad():
        train_z, test_z = model.features(digits_train.x), model.features(x)
    head = model.net.head
    references = {
        "mahalanobis": Mahalanobis(None).fit_features(train_z, digits_train.y),
        "vim": ViM(None, d=64, w=head.weight.detach(), b=head.bias.detach()).fit_features(train_z, digits_train.y),
        "knn": KNN(None, k=10).fit_features(train_z, digits_train.y),
    }
    for name, ref in references.items():
        expected = ref.predict_features(test_z).float()
        assert torch.allclose(_scores(name, model, digits_train, x), expected, rtol=1e-3, atol=1e-3), name


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:.*is deprecated:FutureWarning")
@pytest.mark.parametrize("extra", ["temperature", "no_linear", "torchscript"])
def test_logits_no_linear_outputs_are_refused_naming_features(model, digits_train, digits_test, extra):
    x = digits_test.x[:50]
    net = {
        "temperature": Variant(model, "temperature"),
        "no_linear": nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten()),
        "torchscript": torch.jit.trace(model.eval(), x[:2]),
    }[extra]
    for name in FEATURE_DETECTORS:
        with pytest.raises(ValueError, match="features=callable") as info:
            rk.detector(name).fit(net, digits_train)
        assert ("TorchScript" in str(info.value)) == (extra == "torchscript")
    with pytest.raises(ValueError, match="features="):
        penultimate(net, x)
    # logit detectors still share the forward pass; features=callable still works
    assert logits_and_features(net, x)[1] is None
    shared = rk.evaluate.ood([rk.detector("energy").fit(net), rk.detector("max_logit").fit(net)], x, x[:10])
    assert shared["energy"].id_scores.shape == (50,)
    if extra == "temperature":
        got = _scores("mahalanobis", net, digits_train, x, features=model.features)
        assert torch.allclose(got, _scores("mahalanobis", model, digits_train, x), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="does not map features"):  # head(features) is not these logits
            rk.detector("vim", features=model.features, head=model.net.head).fit(net, digits_train)


def test_vim_head_is_checked(model, digits_train, reference):
    x, expected = reference
    net = Variant(model).eval()
    got = _scores("vim", net, digits_train, x, head=model.net.head)
    assert torch.allclose(got, expected["vim"], rtol=1e-5, atol=1e-5)
    got = _scores("vim", net, digits_train, x, features=model.features, head=model.net.head)
    assert torch.allclose(got, expected["vim"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"head=net\.body\.6 outputs"):  # a Linear of the model, not its head
        rk.detector("vim", head=model.net.body[6]).fit(model, digits_train)
    with pytest.raises(ValueError, match="not a layer of the model"):
        rk.detector("vim", head=nn.Linear(128, 10)).fit(model, digits_train)
    with pytest.raises(ValueError, match="does not map features"):
        rk.detector("vim", features=model.features, head=nn.Linear(128, 10)).fit(model, digits_train)


def test_mahalanobis_needs_every_class_of_the_model(model, digits_train):
    keep = digits_train.y != 9  # the highest class: y.max() + 1 would silently count 9 classes
    data = (digits_train.x[keep], digits_train.y[keep])
    for params in ({}, {"features": model.features}):
        with pytest.raises(ValueError, match=r"model's 10 classes.*classes \[9\] have no images"):
            rk.detector("mahalanobis", **params).fit(model, data)
    with pytest.raises(ValueError, match=r"label 10 .* 10 logits"):
        rk.detector("mahalanobis").fit(model, (digits_train.x[:20], torch.full((20,), 10)))


def test_a_changed_model_is_not_read_through_a_stale_head(model, digits_train, digits_test):
    x = digits_test.x[:20]
    net = Variant(model).eval()
    det = rk.detector("mahalanobis").fit(net, digits_train)
    net.head = nn.Linear(128, 10)  # replaced after fit: the fitted head no longer runs
    with pytest.raises(ValueError, match="fit the detector again"):
        det.score(x)
    with pytest.raises(ValueError, match="fit it again"):  # the shared pass finds the new head, det refuses it
        rk.evaluate.ood([det, rk.detector("energy").fit(net)], x, x)
    refitted = rk.detector("mahalanobis").fit(net, digits_train)
    shared = rk.evaluate.ood([refitted, rk.detector("energy").fit(net)], x, x)
    with torch.no_grad():
        assert torch.equal(penultimate(net, x), model.features(x)) and net.head is not model.net.head
    assert torch.allclose(torch.from_numpy(shared["mahalanobis"].id_scores), refitted.score(x), rtol=1e-5, atol=1e-5)
