import dataclasses

import pytest
import torch

from robustkit.core.errors import CheckpointError
from robustkit.modelling.checkpoint import load_checkpoint, save_checkpoint
from robustkit.modelling.models import build_model, model_spec
from robustkit.modelling.train import TrainConfig, augment_batch, fit, train_model


def test_cache_hit_and_miss(tmp_path, digits_train):
    data = digits_train.take(200)
    spec = model_spec("small_cnn", data.info)
    config = TrainConfig(epochs=1)
    first, meta1 = train_model(spec, data, config, cache=tmp_path, progress=False)
    again, meta2 = train_model(spec, data, config, cache=tmp_path, progress=False)
    assert not meta1["cached"] and meta2["cached"] and meta1["cache"] == meta2["cache"]
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    _, meta3 = train_model(spec, data, TrainConfig(epochs=1, seed=1), cache=tmp_path, progress=False)
    _, meta4 = train_model(spec, digits_train.take(201), config, cache=tmp_path, progress=False)
    assert len({meta1["cache"], meta3["cache"], meta4["cache"]}) == 3


def test_interrupted_write_leaves_no_checkpoint(tmp_path, monkeypatch, digits_train):
    spec = model_spec("small_cnn", digits_train.info)
    net = build_model(spec)

    def crash(obj, path):
        open(path, "wb").write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "m.pt", net, spec, {})
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_foreign_checkpoints(tmp_path, digits_train):
    spec = model_spec("small_cnn", digits_train.info)
    net = build_model(spec)
    good = save_checkpoint(tmp_path / "good.pt", net, spec, {"note": 1})
    loaded, meta = load_checkpoint(good)
    assert meta == {"note": 1} and not loaded.training
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a robustkit checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_broken_cache_entry_is_retrained(tmp_path, digits_train):
    data = digits_train.take(100)
    spec = model_spec("small_cnn", data.info)
    _, meta = train_model(spec, data, TrainConfig(epochs=1), cache=tmp_path, progress=False)
    open(meta["cache"], "wb").write(b"garbage")
    _, again = train_model(spec, data, TrainConfig(epochs=1), cache=tmp_path, progress=False)
    assert not again["cached"]
    load_checkpoint(again["cache"])


def test_soft_labels_and_batch_hook_see_current_weights(digits_train):
    data = digits_train.take(128)
    net = build_model(model_spec("small_cnn", data.info))
    seen = []

    def hook(model, x, y):
        seen.append(next(model.parameters()).detach().clone())
        assert model.training
        return x, y

    soft = torch.full((128, 10), 0.1)
    history = fit(
        net, data.x, soft, TrainConfig(epochs=2, batch_size=64, temperature=5.0), batch_hook=hook, progress=False
    )
    assert len(seen) == 4 and not torch.equal(seen[0], seen[-1])  # weights change between batches
    assert len(history) == 2 and history[-1]["loss"] == pytest.approx(torch.log(torch.tensor(10.0)).item(), abs=0.05)


def test_augment_is_a_crop_and_flip():
    x = torch.rand(16, 3, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)]
    same = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and any(flipped) and any(same)


def test_bad_config():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="unknown architecture"):
        model_spec("vgg", type("I", (), {"shape": (1, 8, 8), "num_classes": 10, "mean": (0.5,), "std": (0.5,)})())


def test_same_key_same_weights_whatever_the_global_rng(tmp_path, digits_train):
    data = digits_train.take(64)
    spec = model_spec("small_cnn", data.info)
    torch.manual_seed(1)
    a, _ = train_model(spec, data, TrainConfig(epochs=1), cache=False, progress=False)
    torch.manual_seed(2)
    b, _ = train_model(spec, data, TrainConfig(epochs=1), cache=False, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_optimizers_and_schedules(digits_train):
    from robustkit.modelling.train import make_optimizer, make_scheduler

    data = digits_train.take(256)
    spec = model_spec("small_cnn", data.info)
    for optimizer in ("adam", "adamw", "sgd"):
        for schedule in ("constant", "onecycle", "cosine"):
            config = TrainConfig(epochs=2, optimizer=optimizer, schedule=schedule, lr=2e-3)
            history = fit(build_model(spec), data.x, data.y, config, progress=False)
            assert len(history) == 2 and torch.isfinite(torch.tensor(history[-1]["loss"]))
            opt = make_optimizer(build_model(spec), config)
            sched = make_scheduler(opt, config, 10)
            rates = []
            for _ in range(10):
                rates.append(opt.param_groups[0]["lr"])
                opt.step()
                if sched is not None:
                    sched.step()
            if schedule == "constant":
                assert sched is None and set(rates) == {2e-3}
            else:
                assert max(rates) == pytest.approx(2e-3, rel=0.05) and opt.param_groups[0]["lr"] < 2e-4
    assert isinstance(make_optimizer(build_model(spec), TrainConfig(optimizer="adamw")), torch.optim.AdamW)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="noise"):
        TrainConfig(noise=-0.1)


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_training_at_a_temperature_is_training_at_one_with_logits_scaled(digits_train, digits_test, optimizer):
    """With the head initialised T× larger and trained at the matching learning rate and weight
    decay, the run at T = 20 follows the run at T = 1 step for step: same predictions, z/T = z."""
    data = digits_train.take(400)
    spec = model_spec("small_cnn", data.info)
    base = TrainConfig(epochs=2, lr=0.02 if optimizer == "sgd" else 2e-3, weight_decay=5e-4, optimizer=optimizer,
                       schedule="onecycle")  # fmt: skip
    cold, _ = train_model(spec, data, base, cache=False, progress=False)
    hot, meta = train_model(spec, data, dataclasses.replace(base, temperature=20.0), cache=False, progress=False)
    with torch.no_grad():
        z1, z20 = cold(digits_test.x), hot(digits_test.x)
    assert torch.equal(z1.argmax(1), z20.argmax(1))
    assert (z20 / 20 - z1).abs().max() < 0.05 * z1.abs().mean()
    assert meta["extra"]["temperature_training"] == "head scaled by T"


def test_models_without_a_head_get_the_t_squared_factor(digits_train, digits_test):
    """At T = 20 a coupled weight decay outweighs the 1/T-scaled data term unless the loss is
    multiplied by T² (a model without ``head`` has no other remedy); with it, it learns."""
    from robustkit.evaluate import accuracy

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    config = TrainConfig(epochs=8, lr=2e-3, weight_decay=2e-2, temperature=20.0)  # without T²: chance (0.10)
    history = fit(net, digits_train.x, digits_train.y, config, progress=False)
    assert accuracy(net, digits_test.x, digits_test.y) > 0.8
    assert history[-1]["loss"] < 2.2  # the recorded loss is the unscaled cross-entropy at T
