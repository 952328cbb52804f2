import pytest
import torch

import robustkit as rk
from robustkit.defenses.distillation import TemperatureScaled, soft_labels
from robustkit.evaluate import accuracy, attack_batches, robust_accuracy
from robustkit.modelling.train import TrainConfig

CONFIG = TrainConfig(epochs=6, lr=2e-3)


def test_adversarial_training_raises_fgsm_accuracy(model, digits_train, digits_test):
    fgsm = rk.attack("fgsm", eps=0.15)
    trainer = rk.defense(
        "adversarial_training", attack=fgsm, train_config=CONFIG, monitor=digits_test.take(64), progress=False
    )
    robust = trainer.apply(model, digits_train)
    x, y = digits_test.x, digits_test.y
    before, after = robust_accuracy(fgsm, model, x, y)["accuracy"], robust_accuracy(fgsm, robust, x, y)["accuracy"]
    assert after > before + 0.15 and accuracy(robust, x, y) > 0.9
    assert {"monitor_clean", "monitor_fgsm", "monitor_pgd"} <= set(trainer.history[-1])
    assert trainer.catastrophic_overfitting in (True, False)


def test_adversarial_hook_uses_current_weights(model, digits_test):
    trainer = rk.defense("adversarial_training", attack=rk.attack("fgsm", eps=0.1), mix=0.5)
    x, y = digits_test.x[:8], digits_test.y[:8]
    out1, _ = trainer.batch_hook(model, x, y)
    assert torch.equal(out1[4:], x[4:]) and not torch.equal(out1[:4], x[:4])
    import robustkit.modelling.models as models

    changed = models.build_model(model.robustkit_spec)
    out2, _ = trainer.batch_hook(changed, x, y)
    assert not torch.equal(out1[:4], out2[:4])
    targeted = rk.defense("adversarial_training", attack=rk.attack("fgsm", eps=0.1), targeted=True)
    out3, _ = targeted.batch_hook(model, x, y)
    assert out3.shape == x.shape


def test_soft_labels_follow_the_formula():
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(5, 1, 2, 2)
    logits = teacher(x).detach()
    for t in (1.0, 5.0, 50.0):
        expected = torch.exp(logits / t) / torch.exp(logits / t).sum(1, keepdim=True)
        assert torch.allclose(soft_labels(teacher, x, t), expected, atol=1e-6)
    assert soft_labels(teacher, x, 50.0).max() < soft_labels(teacher, x, 1.0).max()  # higher T, softer
    with pytest.raises(ValueError):
        soft_labels(teacher, x, 0.0)


def test_distilled_student_is_close_to_teacher(model, digits_train, digits_test):
    distill = rk.defense("distillation", temperature=10, train_config=TrainConfig(epochs=10, lr=2e-3), progress=False)
    student = distill.apply(model, digits_train)
    x, y = digits_test.x, digits_test.y
    assert accuracy(student, x, y) > accuracy(distill.teacher, x, y) - 0.05
    scaled = TemperatureScaled(student, 10)  # Carlini & Wagner 2016: attack the logits divided by T
    assert torch.equal(scaled(x).argmax(1), student(x).argmax(1))
    pgd = rk.attack("pgd", eps=0.2, steps=10)
    plain = accuracy(student, attack_batches(pgd, student, x, y), y)
    adaptive = accuracy(student, attack_batches(pgd, scaled, x, y), y)
    assert adaptive < plain / 3  # the saturated softmax at T = 1 held the plain attack back (here 0.13 vs 0.02)
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScaled(student, 0)


def test_bpda_passes_gradients_straight_through(model, batch):
    x, _ = batch
    wrapped = rk.defense("bit_depth", bits=2).apply(model)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(wrapped(xg).sum(), xg)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    with torch.no_grad():
        from robustkit.modelling.squeezers import bit_depth

        assert torch.allclose(wrapped(x), model(bit_depth(x, 2)))


def test_purification_oblivious_and_adaptive(model, digits_train, digits_test):
    x, y = digits_test.x[:200], digits_test.y[:200]
    pgd = rk.attack("pgd", eps=0.15, steps=10)
    defense = rk.defense("ae_purification", progress=False)
    purified = defense.apply(model, digits_train)
    assert accuracy(purified, x, y) > accuracy(model, x, y) - 0.03, "the denoiser must keep clean accuracy"
    adv = attack_batches(pgd, model, x, y)
    oblivious = accuracy(purified, adv, y)
    adaptive = robust_accuracy(pgd, purified, x, y)["accuracy"]
    assert oblivious > accuracy(model, adv, y) + 0.05
    assert adaptive < oblivious, "attacking through the autoencoder must hurt more than attacking around it"
    bpda = rk.defense("ae_purification", autoencoder=defense.autoencoder, straight_through=True).apply(model)
    xg = x[:4].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(bpda(xg).sum(), xg)
    with torch.no_grad():
        assert torch.allclose(bpda(x[:4]), purified(x[:4]))
    assert grad.abs().sum() > 0


def test_denoiser_starts_as_the_identity_and_learns_to_denoise(digits_train):
    from robustkit.modelling.models import build_model, model_spec
    from robustkit.modelling.train import train_autoencoder

    x = digits_train.x[:64]
    fresh = build_model(model_spec("denoiser", digits_train.info))
    with torch.no_grad():
        assert torch.equal(fresh(x), x.clamp(0, 1))
    config = TrainConfig(epochs=4, batch_size=128, lr=2e-3, objective="reconstruct", noise=0.1)
    denoiser = train_autoencoder(digits_train, config, cache=False, arch="denoiser")
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        assert (denoiser(noisy) - x).pow(2).mean() < 0.85 * (noisy - x).pow(2).mean()


def test_squeezed_training_raises_oblivious_accuracy(model, digits_train, digits_test):
    x, y = digits_test.x, digits_test.y
    adv = attack_batches(rk.attack("fgsm", eps=0.15), model, x, y)
    defended = rk.defense("squeezed_training", squeezer="bit_depth:2", train_config=CONFIG, progress=False).apply(
        model, digits_train
    )
    assert accuracy(defended, adv, y) > accuracy(model, adv, y) + 0.1


def test_defense_errors(model):
    with pytest.raises(ValueError, match="valid names"):
        rk.defense("jpeg")
    with pytest.raises(ValueError, match="mix"):
        rk.defense("adversarial_training", mix=0)
    with pytest.raises(ValueError, match="apply\\(model, train_data\\)"):
        rk.defense("distillation").apply(model)
    with pytest.raises(ValueError, match="no targeted mode"):
        rk.defense("adversarial_training", attack=rk.attack("deepfool"), targeted=True)
    with pytest.raises(TypeError, match="no parameter"):
        rk.defense("median_filter", window=3)


def _history(fgsm, pgd, clean=0.5):
    return [{"epoch": i + 1, "monitor_clean": clean, "monitor_fgsm": f, "monitor_pgd": p} for i, (f, p) in
            enumerate(zip(fgsm, pgd, strict=True))]  # fmt: skip


def test_overfitting_is_detected_at_any_accuracy_level():
    from robustkit.defenses.training import overfitting_verdict

    assert overfitting_verdict([])["overfitting"] is None
    # FGSM at eps 0.1 on CIFAR: PGD accuracy 0 from the first epoch while FGSM accuracy climbs
    flat = overfitting_verdict(_history([0.2, 0.35, 0.46], [0.0, 0.0, 0.0]))
    assert flat["overfitting"] and "FGSM accuracy 0.460 but PGD accuracy 0.000" in flat["reason"]
    assert "since epoch 1" in flat["reason"]
    # the classic collapse at a low level (never above 0.1)
    low = overfitting_verdict(_history([0.09, 0.1, 0.1], [0.08, 0.09, 0.01]))
    assert low["overfitting"] and "collapsed from 0.090" in low["reason"]
    healthy = overfitting_verdict(_history([0.3, 0.4, 0.45], [0.25, 0.33, 0.38]))
    assert healthy["overfitting"] is False and "tracks" in healthy["reason"]
    hopeless = overfitting_verdict(_history([0.05, 0.04], [0.0, 0.0]))  # nothing learned, nothing masked
    assert hopeless["overfitting"] is False


def test_random_start_fgsm_stays_in_the_ball_and_is_not_plain_fgsm(model, digits_test):
    x, y = digits_test.x[:16], digits_test.y[:16]
    eps = 0.1
    plain = rk.defense("adversarial_training", attack=rk.attack("fgsm", eps=eps), mix=1.0)
    rs = rk.defense("adversarial_training", attack=rk.attack("fgsm", eps=eps), mix=1.0, random_start=True)
    assert rs.alpha == pytest.approx(1.25 * eps) and plain.alpha is None
    torch.manual_seed(0)
    a, _ = rs.batch_hook(model, x, y)
    b, _ = plain.batch_hook(model, x, y)
    assert (a - x).abs().max() <= eps + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, b) and (a - x).abs().max() > 0.09
    torch.manual_seed(1)
    c, _ = rs.batch_hook(model, x, y)
    assert not torch.equal(a, c), "a fresh random start every batch"
    with pytest.raises(ValueError, match="random_start applies to FGSM"):
        rk.defense("adversarial_training", attack=rk.attack("pgd", eps=eps), random_start=True)
