"""robustbench:NAME: RobustBench's zoo entries load as RobustBench loads them (same logits), offline from its
folder layout, and `robustkit eval` gives the numbers of ``robustbench.eval.benchmark`` on the same images.

Weights and data cannot be downloaded here: the tests write checkpoints in RobustBench's layout and format
(``MODEL_DIR/<dataset>/<threat_model>/<name>.pt``) and CIFAR-10 in its official python layout. Published zoo
architectures are WideResNet-28-10 and larger (about a second per image for one AutoAttack iteration on this
CPU), so the evaluation tests register one small entry in RobustBench's zoo table, built from RobustBench's own
WideResNet class at depth 10, width 1; the loading tests use the published entries' architectures.
"""

import functools
import json
import os
import pickle
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

import robustkit as rk
from robustkit.app.cli import main
from robustkit.core.errors import BackendMissingError, CheckpointError, WeightsNotFoundError
from robustkit.modelling.zoo import ROBUSTBENCH_PREPROCESSING, InputSpec, import_robustbench

rb = import_robustbench()  # robustbench 1.1.1 needs robustkit's `autoattack` module (see the module's docstring)
import robustbench.eval  # noqa: E402
from robustbench.model_zoo import model_dicts  # noqa: E402
from robustbench.model_zoo.architectures.wide_resnet import WideResNet  # noqa: E402
from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel  # noqa: E402

CIFAR10 = BenchmarkDataset.cifar_10
TINY = "Tiny2025Test"
AUTOATTACK = robustbench.eval.AutoAttack  # the `autoattack.AutoAttack` RobustBench imported


def save_robustbench(folder, dataset, threat, name, state, wrap="state_dict"):
    """A checkpoint where RobustBench keeps it, in one of the formats its loader reads (``module.`` prefixes,
    the state_dict under ``state_dict``, ``last``, or bare)."""
    state = {f"module.{k}": v for k, v in state.items()}
    path = folder / dataset / threat / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state if wrap is None else {wrap: state}, path)
    return path


def zoo_model(dataset, threat, name, seed=0):
    torch.manual_seed(seed)
    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)][name]["model"]().eval()


@pytest.mark.parametrize(
    ("dataset", "threat", "name", "wrap", "normalises"),
    [
        ("cifar10", "Linf", "Andriushchenko2020Understanding", "last", False),  # PreActResNet-18, bare [0, 1] input
        ("cifar10", "L2", "Rade2021Helper_R18_ddpm", "state_dict", True),  # DMPreActResNet-18 with its mean/std
        ("cifar10", "corruptions", "Hendrycks2020AugMix_WRN", "state_dict", True),  # WRN-40-2 with mu/sigma
        ("imagenet", "Linf", "Salman2020Do_R18", None, True),  # torchvision ResNet-18 behind normalize_model
    ],
)
def test_zoo_entries_load_as_robustbench_loads_them(tmp_path, dataset, threat, name, wrap, normalises):
    """The same logits as ``robustbench.utils.load_model`` on the same [0, 1] images, from the same file."""
    net = zoo_model(dataset, threat, name)
    state = net.state_dict()
    if dataset == "imagenet":  # RobustBench's ImageNet checkpoints hold the bare network: it adds `model.` itself
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    save_robustbench(tmp_path, dataset, threat, name, state, wrap)
    ours = rk.load_model(f"robustbench:{name}", dataset=dataset, threat_model=threat, model_dir=tmp_path, device="cpu")
    theirs = rb.utils.load_model(name, model_dir=str(tmp_path), dataset=dataset, threat_model=threat)
    side = 32 if dataset != "imagenet" else 224
    x = torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x)) and torch.equal(ours(x), net(x))
    assert not ours.training and ours.robustkit_input.shape == (3, side, side)
    buffers = {k for k, _ in ours.named_buffers()}
    assert any(k.split(".")[-1] in ("mu", "mean") for k in buffers) == normalises  # the entry's own layer, no other
    if dataset == "imagenet":
        assert ours.robustkit_input == InputSpec((3, 224, 224), 256, 224, "bilinear", ours.robustkit_input.origin)


def test_robustkits_preprocessing_is_robustbenchs():
    """`InputSpec.transform` equals ``robustbench.data.PREPROCESSINGS`` for every named preprocessing."""
    from PIL import Image
    from robustbench.data import PREPROCESSINGS

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 340, 3), dtype=np.uint8))
    assert set(ROBUSTBENCH_PREPROCESSING) == set(PREPROCESSINGS)
    for key, steps in ROBUSTBENCH_PREPROCESSING.items():
        spec = InputSpec((3, 0, 0), **steps)
        assert torch.equal(spec.transform()(image), PREPROCESSINGS[key](image)), key


def test_missing_weights_are_one_line_and_nothing_is_downloaded(tmp_path, monkeypatch, capsys):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(rb.utils, "download_gdrive_new", no_download)
    with pytest.raises(WeightsNotFoundError, match=r"Carmon2019Unlabeled\.pt is missing .*file id 15tUx-gkZMYx7BfEOw1GY5OKC-jECIsPQ"):
        rk.load_model("robustbench:Carmon2019Unlabeled", model_dir=tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["attack", "--model", "robustbench:Wong2020Fast", "--dataset", "cifar10", "--model-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt") in err and "--download" in err
    # the default folder follows $ROBUSTKIT_CACHE, as the model cache does
    monkeypatch.setenv("ROBUSTKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "cache" / "robustbench" / "cifar10" / "L2")):
        rk.load_model("robustbench:Engstrom2019Robustness", threat_model="L2")


def test_robustbench_overwritten_by_torchattacks_copy_is_refused_with_the_fix(monkeypatch):
    """torchattacks 3.5.1's wheel ships a commented-out copy of robustbench (no ``benchmark``); installed after
    robustbench, it replaces robustbench's files: refused, naming the reinstall, not left to fail inside RobustBench."""
    monkeypatch.delattr(rb, "benchmark")
    with pytest.raises(BackendMissingError, match=r"overwritten by torchattacks.*--force-reinstall --no-deps robustbench"):
        import_robustbench()


def test_bad_names_and_weights_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="did you mean Carmon2019Unlabeled"):
        rk.load_model("robustbench:Carmon2019Unlabled")
    with pytest.raises(ValueError, match="in the zoo for --dataset cifar10 --threat-model corruptions"):
        rk.load_model("robustbench:Hendrycks2020AugMix_WRN")
    with pytest.raises(ValueError, match="valid: Linf, L2, corruptions"):
        rk.load_model("robustbench:Standard", threat_model="L3")
    with pytest.raises(ValueError, match="pass --dataset cifar10, cifar100 or imagenet"):
        rk.load_model("robustbench:Standard", dataset="digits")
    with pytest.raises(ValueError, match="drop --num-classes 7"):
        rk.load_model("robustbench:Standard", num_classes=7)
    with pytest.raises(ValueError, match="apply to robustbench:NAME models"):
        rk.load_model("torchvision.models:resnet18", threat_model="L2")
    bad = tmp_path / "cifar10" / "Linf" / "Andriushchenko2020Understanding.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="RobustBench's loader could not load"):
        rk.load_model("robustbench:Andriushchenko2020Understanding", model_dir=tmp_path)


def test_weights_option_reads_a_checkpoint_in_robustbenchs_format(tmp_path):
    net = zoo_model("cifar10", "corruptions", "Hendrycks2020AugMix_WRN", seed=3)
    path = save_robustbench(tmp_path, "x", "y", "anything", net.state_dict())
    ours = rk.load_model("robustbench:Hendrycks2020AugMix_WRN", threat_model="corruptions", weights=path, device="cpu")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), net(x))
    with pytest.raises(ValueError, match="an ensemble of 3 checkpoints"):
        rk.load_model("robustbench:Chen2020Adversarial", weights=path)


# ---------------------------------------------------------------- the yardstick: robustbench.eval.benchmark


def tiny_wrn():
    return WideResNet(depth=10, widen_factor=1)


@pytest.fixture()
def tiny_zoo(tmp_path, monkeypatch):
    """A small entry in RobustBench's zoo table (both threat models), its checkpoint in RobustBench's layout,
    and CIFAR-10's official python files (``cifar-10-batches-py``) holding 16 test images: the model's own
    predictions for most of them, so the attack has images to attack."""
    for threat in (ThreatModel.Linf, ThreatModel.L2):
        monkeypatch.setitem(model_dicts[CIFAR10][threat], TINY, {"model": tiny_wrn, "gdrive_id": "none"})
    torch.manual_seed(0)
    net = tiny_wrn().eval()
    images = np.random.default_rng(0).integers(0, 256, (16, 3072), dtype=np.uint8)
    x = torch.from_numpy(images).float().div(255).view(-1, 3, 32, 32)
    with torch.no_grad():  # untrained, it calls every image one class: centre its logits so they follow the image
        features = []
        hook = net.fc.register_forward_hook(lambda m, inputs, out: features.append(inputs[0]))
        net(x)
        hook.remove()
        net.fc.bias -= net.fc.weight @ features[0].mean(0)
        labels = net(x).argmax(1)
    for threat in ("Linf", "L2"):
        save_robustbench(tmp_path / "models", "cifar10", threat, TINY, net.state_dict())
    labels[::3] = (labels[::3] + 1) % 10  # misclassified: not attacked
    write_cifar10(tmp_path / "data", images, labels.tolist())
    # torchvision, which RobustBench reads CIFAR-10 with, checks the official files' md5 sums: these are small stand-ins
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda path, md5=None: os.path.isfile(path))
    monkeypatch.chdir(tmp_path)
    return net


def write_cifar10(root, images, labels):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": images[:2], "labels": labels[:2]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": images, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def robustbench_numbers(threat, n, eps, batch_size, autoattack=None):
    """``robustbench.eval.benchmark`` on RobustBench's loading of the tiny entry. Its AutoAttack is seeded
    with the clock (``seed=None``); here with robustkit's seed, 0."""
    autoattack = autoattack or functools.partial(AUTOATTACK, seed=0)
    model = rb.utils.load_model(TINY, model_dir="models", dataset="cifar10", threat_model=threat)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(robustbench.eval, "AutoAttack", autoattack)
        return robustbench.eval.benchmark(
            model, n_examples=n, dataset="cifar10", threat_model=threat, data_dir="data", eps=eps, batch_size=batch_size
        )


def robustkit_numbers(threat, n, eps, batch_size, *attack):
    cheap = ["--ood", "fakedata", "--detector", "max_logit", "--no-progress", "--overwrite", "--out", "run"]
    main(["eval", "--model", f"robustbench:{TINY}", "--threat-model", threat, "--model-dir", "models", "--root", "data",
          "--limit", str(n), "--eps", str(eps), "--batch-size", str(batch_size), *attack, *cheap])  # fmt: skip
    results = json.loads(open("run/results.json").read())
    return results["clean_accuracy"], results["robust_accuracy"], results


@pytest.mark.parametrize(("threat", "eps"), [("Linf", 8 / 255), ("L2", 0.5)])
def test_eval_equals_robustbench_benchmark_with_the_standard_autoattack(tiny_zoo, threat, eps):
    """RobustBench's setting: AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) at RobustBench's budget, in
    batches of 32 (benchmark's default), on 6 images; ``--threat-model L2`` alone picks the L2 suite, as the
    leaderboard's. The untrained model keeps none of its 4 correct images (one that survived APGD-CE would cost
    FAB-T's and Square's thousands of passes on this CPU)."""
    theirs = robustbench_numbers(threat, 6, eps, 32)
    clean, robust, results = robustkit_numbers(threat, 6, eps, 32)
    assert (clean, robust) == theirs == (4 / 6, 0.0)
    assert results["attack"]["name"] == ("autoattack" if threat == "Linf" else "autoattack_l2")
    assert results["attack"]["version"] == "standard" and results["attack"]["eps"] == eps
    log = results["attack"]["log"]
    assert [row["attack"] for row in log] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [row["accuracy"] for row in log] == [0.0] * 4  # APGD-CE broke them all: the others had nothing left


def cheap_autoattack(model, norm, eps, version, device, log_path=None, seed=None):
    """RobustBench's AutoAttack call, its suite cut to APGD-CE with 10 iterations and one restart, seed 0."""
    from pyautoattack.autopgd_base import APGDAttack

    suite = AUTOATTACK(model, norm=norm, eps=eps, seed=0, version="custom", attacks_to_run=["apgd-ce"],
                                        device=device, log_path=log_path, verbose=False)  # fmt: skip
    suite.apgd = APGDAttack(model, n_iter=10, n_restarts=1, eps=eps, norm=norm, seed=0, device=device, logger=suite.logger)
    return suite


@pytest.mark.parametrize(("threat", "eps"), [("Linf", 1 / 255), ("L2", 0.15)])
def test_eval_equals_robustbench_benchmark_image_for_image(tiny_zoo, threat, eps):
    """16 images attacked 6 at a time, so survivors are pooled across data batches as AutoAttack pools them: the same
    clean and robust accuracy, with images both broken and left standing (budgets below RobustBench's, which leave
    the untrained model nothing)."""
    theirs = robustbench_numbers(threat, 16, eps, 6, autoattack=cheap_autoattack)
    clean, robust, results = robustkit_numbers(threat, 16, eps, 6, "--attack", "apgd" if threat == "Linf" else "apgd_l2",
                                               "--param", "steps=10")  # fmt: skip
    assert (clean, robust) == theirs
    assert 0 < robust < clean == 10 / 16, robust
    assert results["attack"]["steps"] == 10 and results["options"]["batch_size"] == 6


def test_corruption_accuracy_equals_robustbenchs_corruption_loader(tiny_zoo, tmp_path):
    """The official CIFAR-10-C layout under the data root: robustkit reads the rows RobustBench reads, and gives
    the accuracy RobustBench's corruption evaluation computes from them (its ``load_cifar10c`` and
    ``clean_accuracy`` per corruption and severity, averaged). robustbench 1.1.1's ``benchmark`` itself cannot run
    on CIFAR corruptions: it passes ``prepr=`` to ``load_cifar10c``, which has no such parameter.

    RobustBench slices each corruption's file at a fixed 10,000 images per severity, so a small file will not do:
    the test writes fog.npy at its official size (50,000 × 32×32×3, sparse on disk), the first 16 images of each
    severity real."""
    from robustbench.data import load_cifar10c
    from robustbench.utils import clean_accuracy

    folder = tmp_path / "data" / "CIFAR-10-C"
    folder.mkdir()
    test = rk.load_dataset("cifar10", "test", root="data")
    labels = np.zeros(50_000, dtype=np.int64)
    fog = np.lib.format.open_memmap(folder / "fog.npy", mode="w+", dtype=np.uint8, shape=(50_000, 32, 32, 3))
    clean = (test.x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    rng = np.random.default_rng(1)
    for s in range(5):  # stand-in corruptions, stronger with the severity
        rows = slice(s * 10_000, s * 10_000 + len(test))
        noise = rng.integers(-40 * (s + 1), 40 * (s + 1) + 1, clean.shape)
        fog[rows] = np.clip(clean.astype(int) + noise, 0, 255).astype(np.uint8)
        labels[rows] = test.y.numpy()
    fog.flush()
    del fog
    np.save(folder / "labels.npy", labels)
    model = rk.load_model(f"robustbench:{TINY}", model_dir="models", device="cpu")
    theirs = {}
    for severity in range(1, 6):
        x, y = load_cifar10c(16, severity, "data", corruptions=["fog"])
        theirs[severity] = clean_accuracy(model, x, y, batch_size=6)
    ours = rk.evaluate.corruption_accuracy(model, test, corruptions=["fog"], files=folder, batch_size=6)
    assert ours.accuracy["fog"] == theirs and ours.clean_accuracy == 10 / 16
    assert len(set(theirs.values())) > 1  # the severities differ: their rows are not mixed up
    with pytest.raises(TypeError, match="prepr"):
        rb_model = rb.utils.load_model(TINY, model_dir="models", dataset="cifar10", threat_model="Linf")
        robustbench.eval.benchmark(rb_model, n_examples=16, threat_model="corruptions", data_dir="data", batch_size=6)


# ---------------------------------------------------------------- the docs page


PAGE = Path(__file__).resolve().parents[1] / "docs" / "robustbench.md"
SMALLER = [(r"--limit \d+", "--limit 6"), (r"\blimit=\d+", "limit=6"), (r"n_examples=\d+", "n_examples=6"),
           (r"--n \d+", "--n 200")]  # fmt: skip


def page_commands() -> list[tuple[str, str]]:
    """(kind, text) of every command on the page: robustkit and python -c lines of its bash blocks, its python blocks."""
    found = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", PAGE.read_text(), re.M | re.S):
        if lang == "python":
            found.append(("python", body))
        elif lang == "bash":
            for line in body.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if line and not line.startswith("#"):
                    found.append(("shell", line))
    return found


def test_every_command_of_the_robustbench_page_runs(tiny_zoo, tmp_path, monkeypatch, capsys):
    """Each command as the page writes it, on the tests' files: the zoo names it uses are small entries whose
    checkpoints sit in robustkit's default folder (and in a RobustBench `models/` folder), timm's and
    torchvision's weights in their caches; only the data root and the image counts are made small."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    cache = tmp_path / "cache"
    monkeypatch.setenv("ROBUSTKIT_CACHE", str(cache))
    for threat, name in [("Linf", "Carmon2019Unlabeled"), ("L2", "Engstrom2019Robustness"),
                         ("corruptions", "Hendrycks2020AugMix_WRN")]:  # fmt: skip
        monkeypatch.setitem(model_dicts[CIFAR10][ThreatModel(threat)], name, {"model": tiny_wrn, "gdrive_id": "none"})
        for folder in (cache / "robustbench", tmp_path / "models"):
            save_robustbench(folder, "cifar10", threat, name, tiny_zoo.state_dict())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import timm
    import torchvision

    for tagged in ("resnet18.a1_in1k",):
        repo = timm.models.get_pretrained_cfg(tagged).hf_hub_id
        snapshot = tmp_path / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
        save_file(timm.create_model(tagged).state_dict(), snapshot / "model.safetensors")
    for arch, weights in (("mobilenet_v3_large", "IMAGENET1K_V2"), ("resnet18", "DEFAULT")):
        chosen = torchvision.models.get_model_weights(arch)[weights]
        path = tmp_path / "torch" / "hub" / "checkpoints" / chosen.url.rsplit("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision.models.get_model(arch).state_dict(), path)
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "mine.pt")
    monkeypatch.setattr(robustbench.eval, "AutoAttack", AUTOATTACK)  # the page's last block replaces it
    rng = np.random.default_rng(5)  # a training split with every class, for the default OOD detectors' fit
    for i in range(1, 6):
        with open(tmp_path / "data" / "cifar-10-batches-py" / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8), "labels": [j % 10 for j in range(40)]}, f)
    ran = []
    for kind, text in page_commands():
        for pattern, small in SMALLER:
            text = re.sub(pattern, small, text)
        text = text.replace("/data", str(tmp_path / "data"))
        if kind == "python":
            exec(compile(text, str(PAGE), "exec"), {})
        elif text.startswith("robustkit "):
            main(shlex.split(text)[1:] + ["--no-progress"] * (text.split()[1] in ("eval", "attack")))
        elif text.startswith("python -c "):
            exec(shlex.split(text)[2], {})
        else:
            assert text.startswith("pip install 'robustkit[robustbench]'"), text
            continue
        ran.append(text.split()[1] if kind == "shell" else "python")
    assert ran.count("eval") == 3 and {"attack", "certify", "-c"} <= set(ran) and ran.count("python") == 3
    assert "clean " in capsys.readouterr().out
