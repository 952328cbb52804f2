import numpy as np
import pytest
import torch

import robustkit as rk
from robustkit.core.errors import NotFittedError
from robustkit.evaluate import ood, ood_metrics

LOGIT_DETECTORS = ["max_logit", "max_softmax", "energy", "entropy", "odin"]
FEATURE_DETECTORS = ["mahalanobis", "vim", "knn"]


class Confident(torch.nn.Module):
    """Huge logit for class 0 on bright images (ID), flat logits on dark ones (OOD)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(2, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[20.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
            self.head.bias.zero_()

    def features(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, 1 - m], dim=1)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("name", LOGIT_DETECTORS)
def test_sign_on_a_known_case(name):
    net = Confident()
    id_x, ood_x = torch.full((8, 1, 4, 4), 0.9), torch.full((8, 1, 4, 4), 0.1)
    det = rk.detector(name).fit(net)
    s_id, s_ood = det.score(id_x), det.score(ood_x)
    assert s_id.shape == (8,) and s_id.device.type == "cpu"
    assert (s_ood > s_id.max()).all(), "higher score must mean more likely OOD"


@pytest.mark.parametrize("name", LOGIT_DETECTORS + FEATURE_DETECTORS + ["reconstruction"])
def test_digits_vs_noise(model, digits_train, digits_test, name):
    noise = rk.load_dataset("fakedata", shape=(1, 8, 8), size=200)
    det = rk.detector(name).fit(model, digits_train)
    result = ood(det, digits_test.x, noise.x)
    assert result.metrics["AUROC"] > 0.9
    assert len(result.id_scores) == 450 and len(result.ood_scores) == 200


@pytest.mark.parametrize("name", LOGIT_DETECTORS + FEATURE_DETECTORS + ["feature_squeezing"])
def test_score_before_fit_and_state(model, batch, name):
    with pytest.raises(NotFittedError, match="fit"):
        rk.detector(name).score(batch[0])
    model.train()
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    det = rk.detector(name)
    det.fit(model, (batch[0], batch[1]))
    det.score(batch[0])
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all((g is None) == (p.grad is None) for g, p in zip(grads, model.parameters(), strict=True))
    model.eval()


def test_feature_detectors_need_data(model):
    with pytest.raises(ValueError, match="training data"):
        rk.detector("mahalanobis").fit(model)
    no_linear = torch.nn.Sequential(torch.nn.Conv2d(1, 10, 8), torch.nn.Flatten())
    with pytest.raises(ValueError, match="features="):
        rk.detector("knn").fit(no_linear, (torch.rand(20, 1, 8, 8), torch.arange(20) % 10))


def test_feature_detectors_hook_the_last_linear_layer_of_any_model(model, digits_train, digits_test):
    """A foreign model's penultimate features are the input of its last nn.Linear."""
    from robustkit.detectors.ood import penultimate

    foreign = torch.nn.Sequential(model.normalize, model.net.body, model.net.head)  # no .features method
    x = digits_test.x[:16]
    with torch.no_grad():
        assert torch.equal(penultimate(foreign, x), model.features(x))
    ours = rk.detector("mahalanobis").fit(model, digits_train).score(x)
    theirs = rk.detector("mahalanobis").fit(foreign, digits_train).score(x)
    assert torch.allclose(ours, theirs)


def test_metrics_by_hand_with_ties():
    id_s, ood_s = [0.1, 0.4, 0.4, 0.8], [0.4, 0.9]
    m = ood_metrics(id_s, ood_s)
    # pairs (ood > id) + half the ties: (3 + 0.5*2) for 0.4, 4 for 0.9 -> 6 / 8
    assert m["AUROC"] == pytest.approx(6 / 8)
    # flagging 95% of OOD needs threshold 0.4: all ID at >= 0.4 (3 of 4) are false positives
    assert m["FPR95TPR"] == pytest.approx(3 / 4)
    assert ood_metrics([0, 0], [1, 1])["AUROC"] == 1.0
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics([np.nan], [1.0])


def test_metrics_agree_with_pytorch_ood():
    from pytorch_ood.metrics import OODMetrics

    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(0, 1, 300).round(1), rng.normal(1, 1, 120).round(1)
    ours = ood_metrics(id_s, ood_s)
    theirs = OODMetrics().update(torch.tensor(np.r_[id_s, ood_s]), torch.tensor([0] * 300 + [-1] * 120)).compute()
    for key in ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"):
        assert ours[key] == pytest.approx(float(theirs[key]), abs=1e-6), key


def test_reconstruction_mse_matches_torch(model, digits_train, digits_test):
    det = rk.detector("reconstruction").fit(None, digits_train)
    x = digits_test.x[:10]
    expected = torch.nn.functional.mse_loss(det.autoencoder(x), x, reduction="none").mean(dim=(1, 2, 3))
    assert torch.allclose(det.score(x), expected, atol=1e-7)


def test_feature_squeezing_flags_adversarial_inputs(model, digits_test):
    from robustkit.modelling.squeezers import default_squeezers

    x, y = digits_test.x[:200], digits_test.y[:200]
    det = rk.detector("feature_squeezing", squeezers=default_squeezers((1, 8, 8))).fit(model)
    for atk in (rk.attack("fgsm", eps=0.15), rk.attack("pgd", eps=0.15)):
        adv = atk(model, x, y)
        fooled = rk.evaluate.predict(model, adv) != y
        m = ood_metrics(det.score_batches(x), det.score_batches(adv[fooled]))
        assert m["AUROC"] > 0.85
    cut = float(np.quantile(det.score_batches(x), 0.95))
    assert (det.score(adv[fooled]) > cut).float().mean() > 0.5


def test_squeezers_match_art_semantics():
    from robustkit.modelling.squeezers import bit_depth, median_filter, resample

    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(bit_depth(x, 1), x.round())
    assert torch.allclose(bit_depth(x, 3), (x * 7).round() / 7, atol=1e-6)
    med = median_filter(x, 3)
    assert med.shape == x.shape
    assert med[0, 1, 4, 4] == pytest.approx(float(x[0, 1, 3:6, 3:6].median()), abs=1e-6)  # per channel, not across
    assert torch.allclose(resample(torch.full((1, 1, 8, 8), 0.3), 2), torch.full((1, 1, 8, 8), 0.3))


def test_many_detectors_share_one_forward_pass_and_match_one_at_a_time(model, digits_train, digits_test):
    """ood() with a list: same numbers as each detector alone, one model pass per batch for the shared ones."""
    names = ("max_logit", "max_softmax", "energy", "entropy", "mahalanobis", "odin")
    detectors = {n: rk.detector(n).fit(model, digits_train) for n in names}
    noise = torch.rand(100, 1, 8, 8)
    together = ood(list(detectors.values()), digits_test.x, noise, batch_size=1000)
    for n in names:
        alone = ood(detectors[n], digits_test.x, noise, batch_size=1000)
        assert np.allclose(together[n].id_scores, alone.id_scores, atol=1e-5), n
        assert together[n].metrics["AUROC"] == pytest.approx(alone.metrics["AUROC"], abs=1e-6), n
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        ood({n: detectors[n] for n in names[:5]}, digits_test.x, noise, batch_size=1000)
    finally:
        handle.remove()
    assert len(calls) == 2  # ID and OOD: one shared pass each for five detectors, and no one-image shape probe
    with pytest.raises(TypeError, match="non-empty list"):
        ood([], digits_test.x, noise)


class OutOfMemoryAboveOne(torch.nn.Module):
    """Fails on batches of more than one image with a RuntimeError that is not about the input's shape."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x):
        if len(x) > 1:
            raise RuntimeError("out of memory (simulated)")
        return self.head(x.flatten(1))


def test_shape_errors_are_explained_without_probing_every_batch(model):
    wrong = torch.rand(4, 3, 8, 8)  # digits are 1×8×8
    detectors = [rk.detector("max_logit").fit(model), rk.detector("odin").fit(model)]
    with pytest.raises(ValueError, match=r"cannot take input of shape \(3, 8, 8\)"):
        detectors[0].score(wrong)
    with pytest.raises(ValueError, match=r"cannot take input of shape \(3, 8, 8\)"):
        ood(detectors, wrong, wrong)
    other = rk.detector("max_logit").fit(OutOfMemoryAboveOne())
    with pytest.raises(RuntimeError, match="out of memory"):  # one image works: the model's own error stands
        other.score(torch.rand(4, 1, 8, 8))
    with pytest.raises(RuntimeError, match="out of memory"):
        ood([other, rk.detector("energy").fit(other.model)], torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8))
