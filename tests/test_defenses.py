import pytest
import torch

import robustkit as rk
from robustkit.defenses.distillation import soft_labels
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
    fgsm = rk.attack("fgsm", eps=0.15)
    purified = rk.defense("ae_purification").apply(model, digits_train)
    adv = attack_batches(fgsm, model, x, y)
    oblivious = accuracy(purified, adv, y)
    adaptive = robust_accuracy(fgsm, purified, x, y)["accuracy"]
    assert oblivious > accuracy(model, adv, y) + 0.05
    assert adaptive < oblivious, "attacking through the autoencoder must hurt more than attacking around it"


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
