"""Bad input through every public entry point, state after errors, interruption, determinism."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import robustkit as rk
from robustkit.app.recipes import load_recipe, recipes
from robustkit.app.runner import RecipeOptions

RECIPES = list(recipes())


def _images(kind, x):
    return {
        "0..255 pixels": x * 255,
        "normalised": (x - 0.5) / 0.25,
        "wrong channels": x.repeat(1, 3, 1, 1),
        "no batch axis": x[0],
        "NaN": torch.where(x > 0.5, torch.tensor(math.nan), x),
        "inf": torch.where(x > 0.5, torch.tensor(math.inf), x),
        "empty batch": x[:0],
        "uint8": (x * 255).to(torch.uint8),
        "numpy array": x.numpy(),
    }[kind]


BAD_IMAGES = [
    "0..255 pixels",
    "normalised",
    "wrong channels",
    "no batch axis",
    "NaN",
    "inf",
    "empty batch",
    "uint8",
    "numpy array",
]


def _entry_points(model, train):
    """Every public call that takes images, as fn(x, y)."""
    fitted = {name: rk.detector(name).fit(model, train) for name in ("max_logit", "mahalanobis", "feature_squeezing")}
    wrapped = rk.defense("median_filter").apply(model)
    return {
        "attack fgsm": lambda x, y: rk.attack("fgsm")(model, x, y),
        "attack pgd/torchattacks": lambda x, y: rk.attack("pgd", "torchattacks", steps=2)(model, x, y),
        "attack deepfool/art": lambda x, y: rk.attack("deepfool", steps=2)(model, x, y),
        "attack ddn/foolbox": lambda x, y: rk.attack("ddn", steps=2)(model, x, y),
        "attack pgd/reference": lambda x, y: rk.attack("pgd", "reference", steps=2)(model, x, y),
        "attack deepfool/reference": lambda x, y: rk.attack("deepfool", "reference", steps=2)(model, x, y),
        "attack on a defended model": lambda x, y: rk.attack("fgsm")(wrapped, x, y),
        "evaluate.accuracy": lambda x, y: rk.evaluate.accuracy(model, x, y),
        "evaluate.robust_accuracy": lambda x, y: rk.evaluate.robust_accuracy(rk.attack("fgsm"), model, x, y),
        "evaluate.eps_sweep": lambda x, y: rk.evaluate.eps_sweep(rk.attack("fgsm"), model, x, y, [0, 0.1]),
        "evaluate.minimal_budget": lambda x, y: rk.evaluate.minimal_budget(model, x, y, max_k=2),
        **{f"detector {n}": (lambda x, y, d=d: d.score(x)) for n, d in fitted.items()},
        "detector ood(), shared pass": lambda x, y: rk.evaluate.ood([fitted["max_logit"], fitted["mahalanobis"]], x, x),
    }


@pytest.fixture(scope="module")
def entry_points(model, digits_train):
    return _entry_points(model, digits_train.take(200))


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_images_everywhere(entry_points, digits_test, kind):
    x, y = digits_test.x[:4], digits_test.y[:4]
    bad = _images(kind, x)
    for name, call in entry_points.items():
        with pytest.raises((ValueError, TypeError)) as info:
            call(bad, y)
        message = str(info.value)
        assert len(message) > 20 and "Traceback" not in message, (name, message)
        assert info.traceback[-1].path.parts[-3:-1] != ("site-packages", "torchattacks"), name


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (lambda y: y + 10, r"\[0, 9\]"),
        (lambda y: y - 20, r"\[0, 9\]"),
        (lambda y: y.float(), "int64"),
        (lambda y: y[:2], "one label"),
    ],
)
def test_bad_labels_everywhere(entry_points, digits_test, labels, match):
    x, y = digits_test.x[:4], digits_test.y[:4]
    for name, call in entry_points.items():
        if name.startswith("detector"):
            continue  # detectors take no labels
        with pytest.raises((ValueError, TypeError), match=match):
            call(x, labels(y))


@pytest.mark.parametrize(
    ("eps", "match"),
    [(-0.1, ">= 0"), (8, "pixel units"), (math.nan, "finite"), ("eight", "not a number"), (None, "number")],
)
def test_bad_eps(eps, match):
    with pytest.raises((ValueError, TypeError), match=match):
        rk.attack("pgd", eps=eps)
    with pytest.raises((ValueError, TypeError), match=match):
        rk.attack("fgsm", backend="art", eps=eps)


def test_zero_eps_is_the_identity(model, batch):
    x, y = batch
    assert torch.equal(rk.attack("fgsm", eps=0)(model, x, y), x)


def test_unknown_names_list_the_valid_ones():
    for make, kind in ((rk.attack, "fgsm"), (rk.detector, "max_logit"), (rk.defense, "median_filter")):
        with pytest.raises(ValueError, match=f"valid names: .*{kind}"):
            make("nonsense")
    with pytest.raises(ValueError, match="valid names: digits"):
        rk.load_dataset("imagenet21k")  # ImageNet-21k has no loader


class Exploding(torch.nn.Module):
    """Works for the shape check, raises inside the backend's forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("boom inside the backend")
        return self.model(x)


@pytest.mark.parametrize(
    ("name", "backend"),
    [("fgsm", "reference"), ("fgsm", "art"), ("pgd", "torchattacks"), ("pgd", "foolbox"), ("pgd", "reference")],
)
def test_state_restored_when_the_backend_raises(model, batch, name, backend):
    x, y = batch
    net = Exploding(model)
    net.train()
    first = next(model.parameters())
    first.grad = torch.full_like(first, 3.0)
    with pytest.raises(RuntimeError, match="boom"):
        rk.attack(name, backend, eps=0.1)(net, x, y)
    assert net.training and model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(first.grad, torch.full_like(first, 3.0))
    first.grad = None
    model.eval()


def test_defense_state_and_inputs_unchanged(model, digits_train, batch):
    x, y = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = x.clone()
    model.train()
    for name in ("bit_depth", "median_filter", "resample"):
        wrapped = rk.defense(name).apply(model)
        rk.attack("fgsm")(wrapped, x, y)
    assert model.training and torch.equal(x, x0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()


def _cli(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "robustkit", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attack", "--weights", "model.pt", "--eps", "-1"], "invalid"),
        (["attack", "--weights", "model.pt", "--attack", "cw"], "unknown attack"),
        (["attack", "--weights", "model.pt", "--eps", "8"], "pixel units"),
        (["attack", "--weights", "foreign.pt"], "weights only (a state_dict); pass --model module:factory"),
        (["attack", "--weights", "pickled.pt"], "--unsafe-pickle"),
        (["attack", "--model", "resnet18"], "must look like module:factory"),
        (["attack", "--model", "torchvision.models:nope"], "has no attribute"),
        (["attack", "--weights", "corrupt.pt"], "not a file torch can read"),
        (["attack", "--weights", "model.pt", "--dataset", "mnist"], "--download"),
        (["attack", "--weights", "model.pt", "--out", "taken"], "--overwrite"),
        (["ood", "--weights", "model.pt", "--detectors", "max_logit,nope"], "unknown detector"),
        (["attack", "--weights", "model.pt", "--param", "alpha=-1"], "alpha=-1 is out of range"),
        (["attack", "--weights", "model.pt", "--param", "stepz=3"], "no parameter stepz"),
        (["defend", "--weights", "model.pt", "--defense", "median_filter", "--param", "size"], "NAME=VALUE"),
        (["defend", "--weights", "model.pt", "--defense", "median_filter", "--param", "size=0"], "size=0 is out of range"),
        (["list", "widgets"], "unknown kind"),
        (["run", "fgsm-sweep", "--dataset", "cifar100:unicorn", "--root", "nowhere"], "not found"),
        (["run", "fgsm-sweep", "--dataset", "digits", "--eps", "0,x"], "not a number"),
        (["run", "fgsm-budget", "--dataset", "digits", "--target", "11", "--epochs", "1"], "unknown class"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, monkeypatch, capsys, digits_train, args, message):
    from robustkit.app.cli import main
    from robustkit.modelling.checkpoint import save_checkpoint
    from robustkit.modelling.models import build_model, model_spec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBUSTKIT_DATA", str(tmp_path / "data"))
    spec = model_spec("small_cnn", digits_train.info)
    save_checkpoint(tmp_path / "model.pt", build_model(spec), spec, {})
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), tmp_path / "pickled.pt")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error:"), lines
    assert (tmp_path / "taken" / "notes.txt").read_text() == "keep"
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("results.json"))


def test_cli_debug_raises_through_recipe_commands(tmp_path):
    from robustkit.app.cli import main
    from robustkit.core.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError):
        main(["run", "fgsm-sweep", "--dataset", "cifar100:unicorn", "--root", str(tmp_path), "--debug"])


def test_killed_recipe_leaves_nothing_trusted_and_reruns(tmp_path, monkeypatch):
    cache, out = tmp_path / "cache", tmp_path / "run"
    env = {**os.environ, "ROBUSTKIT_CACHE": str(cache)}
    args = [
        "run",
        "fgsm-sweep",
        "--dataset",
        "digits",
        "--no-progress",
        "--out",
        str(out),
        "--overwrite",
        "--epochs",
        "500",
    ]
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen(
            [sys.executable, "-m", "robustkit", *args],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background parent may ignore SIGINT
        )
        deadline = time.time() + 120
        while not out.exists() and time.time() < deadline:  # the run folder appears just before training
            time.sleep(0.1)
        time.sleep(2.0)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
        else:
            assert proc.returncode == -signal.SIGKILL
        assert not (out / "results.json").exists()
        assert not list(cache.glob("*.pt")), "no checkpoint that a later run would load"
    monkeypatch.setenv("ROBUSTKIT_CACHE", str(cache))
    options = RecipeOptions(dataset="digits", epochs=1, out=out, overwrite=True, progress=False)
    folder = load_recipe("fgsm-sweep").run(options)
    assert json.loads((folder / "results.json").read_text())["recipe"] == "fgsm-sweep"
    assert len(list(cache.glob("*.pt"))) == 1


def _numbers(folder):
    results = json.loads((folder / "results.json").read_text())
    for key in ("run", "models", "options"):
        results.pop(key)
    results.get("deepfool", {}).pop("seconds", None)  # a wall time (defense-matrix), not a result
    results["findings"] = [re.sub(r"\d+ s on the undefended", "N s on the undefended", f) for f in results.get("findings", [])]
    for check in results.get("checks", []):
        check["values"].pop("seconds", None)
    for row in results.get("sigmas", []):  # certified-vs-empirical's wall times per σ
        row.pop("certify_seconds", None)
        row.pop("attack_seconds", None)
    return results


@pytest.mark.parametrize("name", RECIPES)
def test_same_seed_same_numbers(tmp_path, name):
    runs = []
    for i in range(2):
        options = RecipeOptions(
            dataset="digits", epochs=1, limit=60, out=tmp_path / str(i), progress=False, cache=tmp_path / f"cache{i}"
        )
        runs.append(_numbers(load_recipe(name).run(options)))
    assert runs[0] == runs[1]
