"""Early stopping and attack sequences in robust_accuracy."""

import pytest
import torch

import robustkit as rk
from robustkit.attacks.reference import FGSM
from robustkit.evaluate import attack_batches, predict, robust_accuracy

DETERMINISTIC = [
    ("fgsm", "reference", {"eps": 0.1}),
    ("pgd", "torchattacks", {"eps": 0.1, "steps": 5, "random_start": False}),
    ("ddn", "foolbox", {"steps": 10}),
    ("pgd", "reference", {"eps": 0.1, "steps": 5}),  # random start, seeded per example
    ("pgd_l2", "reference", {"eps": 1.0, "steps": 5}),
]


@pytest.fixture(scope="module")
def weak(digits_train):
    """A digits model trained on 100 images: it gets about half the test set right."""
    from robustkit.modelling.models import model_spec
    from robustkit.modelling.train import TrainConfig, train_model

    torch.manual_seed(0)
    subset = rk.ImageSet(digits_train.x[:100], digits_train.y[:100], digits_train.info, "train")
    net, _ = train_model(model_spec("small_cnn", subset.info), subset, TrainConfig(epochs=6, lr=2e-3), progress=False)
    return net


@pytest.mark.parametrize(("name", "backend", "params"), DETERMINISTIC)
def test_early_stopping_gives_the_numbers_of_attacking_everything(weak, digits_test, name, backend, params):
    x, y = digits_test.x[:200], digits_test.y[:200]
    attack = rk.attack(name, backend, **params)
    early = robust_accuracy(attack, weak, x, y, batch_size=64)
    full = robust_accuracy(attack, weak, x, y, batch_size=64, early_stop=False)
    correct = int((predict(weak, x) == y).sum())
    assert 0.3 < correct / 200 < 0.8, "the model should get a good share wrong, or early stopping saves nothing"
    assert early["accuracy"] == full["accuracy"] and early["clean_accuracy"] == correct / 200
    assert early["attacked"] == correct and full["attacked"] == 200


def test_a_sequence_attacks_only_the_survivors(weak, digits_test):
    x, y = digits_test.x[:200], digits_test.y[:200]
    fgsm = rk.attack("fgsm", eps=0.05)
    pgd = rk.attack("pgd", "reference", eps=0.1, steps=5)
    first = robust_accuracy(fgsm, weak, x, y)
    both = robust_accuracy([fgsm, pgd], weak, x, y)
    full = robust_accuracy([fgsm, pgd], weak, x, y, early_stop=False)
    clean = both["clean_accuracy"] * 200
    assert both["attacked"] == round(clean) + round(first["accuracy"] * 200)  # PGD saw FGSM's survivors only
    assert both["accuracy"] == full["accuracy"] <= min(first["accuracy"], robust_accuracy(pgd, weak, x, y)["accuracy"])
    with pytest.raises(TypeError, match="non-empty sequence"):
        robust_accuracy([], weak, x, y)
    with pytest.raises(ValueError, match="no targeted mode"):
        robust_accuracy([fgsm, rk.attack("deepfool")], weak, x, y, target=(y + 1) % 10)


def test_targeted_early_stopping_attacks_the_images_not_at_their_target(weak, digits_test):
    x, y = digits_test.x[:100], digits_test.y[:100]
    t = rk.evaluate.random_targets(y, 10)
    attack = rk.attack("pgd", "reference", eps=0.2, steps=5)
    early = robust_accuracy(attack, weak, x, y, target=t)
    clean, adv = predict(weak, x), predict(weak, attack_batches(attack, weak, x, y, target=t))
    assert early["attacked"] == int((clean != t).sum())
    # robust: right before and after the attack; at the target: before or after (per-example seeds: the
    # adversarial images of the attacked subset are those of the whole batch)
    assert early["accuracy"] == int(((clean == y) & (adv == y)).sum()) / 100
    assert early["target_rate"] == int(((clean == t) | (adv == t)).sum()) / 100 > 0.3
    full = robust_accuracy(attack, weak, x, y, target=t, early_stop=False)
    assert full["accuracy"] == int((adv == y).sum()) / 100 >= early["accuracy"]


class Recording(FGSM):
    """FGSM that records the size of every batch it attacks."""

    def _run(self, model, x, y, target, num_classes):
        self.sizes.append(len(x))
        return super()._run(model, x, y, target, num_classes)


def test_survivors_are_pooled_into_full_attack_batches(weak, digits_test):
    x, y = digits_test.x[:300], digits_test.y[:300]
    first, second = Recording(eps=0.02), Recording(eps=0.1)
    first.sizes, second.sizes = [], []
    result = robust_accuracy([first, second], weak, x, y, batch_size=64)
    clean = round(result["clean_accuracy"] * 300)
    assert sum(first.sizes) == clean and all(n == 64 for n in first.sizes[:-1]) and len(first.sizes) == -(-clean // 64)
    assert all(n == 64 for n in second.sizes[:-1]) and result["attacked"] == clean + sum(second.sizes)
    plain = robust_accuracy([rk.attack("fgsm", eps=0.02), rk.attack("fgsm", eps=0.1)], weak, x, y, early_stop=False)
    assert result["accuracy"] == plain["accuracy"]


def test_eps_sweep_seeds_each_image_by_its_global_index(model, digits_test):
    """A sweep's PGD row equals robust_accuracy without early stopping, whatever the batch size (the sweep
    attacked images past its first batch with other images' random starts)."""
    x, y = digits_test.x[:300], digits_test.y[:300]
    pgd = rk.attack("pgd", eps=0.1, steps=3)
    sweep = rk.evaluate.eps_sweep(pgd, model, x, y, eps_values=[0.1], batch_size=100)
    whole = rk.evaluate.robust_accuracy(pgd, model, x, y, early_stop=False)
    assert sweep.accuracy[0] == whole["accuracy"]
