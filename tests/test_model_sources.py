"""timm:NAME and torchvision:NAME: pretrained weights from each library's own cache (which the tests write in
the library's layout: nothing can be downloaded here), the library's own normalisation folded into the model
so it takes [0, 1] pixels, new heads, local state_dicts, and every command's --model."""

import json

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

import robustkit as rk
from robustkit.app.cli import main
from robustkit.core.errors import WeightsNotFoundError

TIMM = "test_efficientnet"  # timm's own 0.36M-parameter test model, with a Hugging Face pretrained config
X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", refuse)


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """timm's pretrained TIMM as the Hugging Face cache holds it (models--timm--NAME/snapshots/REV/model.safetensors
    beside refs/main); returns the network whose weights it holds."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = timm.create_model(TIMM).eval()
    repo = timm.models.get_pretrained_cfg(TIMM).hf_hub_id
    folder = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    save_file(net.state_dict(), folder / "snapshots" / revision / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _no_downloads(monkeypatch)
    return net


def test_timm_model_is_timms_pretrained_model_behind_its_own_normalisation(hf_cache):
    ours = rk.load_model(f"timm:{TIMM}", device="cpu")
    cfg = hf_cache.pretrained_cfg
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(ours(X), hf_cache((X - mean) / std), atol=1e-6)
    # the input contract: timm's evaluation transform = robustkit's preprocessing, then the model's first layer
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 230, 3), dtype=np.uint8))
    config = timm.data.resolve_data_config({}, model=hf_cache)
    theirs = timm.data.create_transform(**config)(image)
    pixels = ours.robustkit_input.transform()(image)
    assert ours.robustkit_input.shape == (3, 160, 160) and pixels.min() >= 0 and pixels.max() <= 1
    assert torch.allclose(ours.normalize(pixels[None])[0], theirs, atol=1e-6)


def test_timm_new_head_and_local_weights(hf_cache, tmp_path):
    ten = rk.load_model(f"timm:{TIMM}", num_classes=10, device="cpu")
    assert ten(X).shape == (2, 10)
    assert torch.equal(ten.net.conv_stem.weight, hf_cache.conv_stem.weight)  # the pretrained body, a new head
    torch.save(ten.state_dict(), tmp_path / "mine.pt")  # robustkit's model: normalize.* and net.* keys
    torch.save({"state_dict": ten.net.state_dict()}, tmp_path / "bare.pt")  # timm's own keys
    for file in ("mine.pt", "bare.pt"):
        again = rk.load_model(f"timm:{TIMM}", num_classes=10, weights=tmp_path / file, device="cpu")
        with torch.no_grad():
            assert torch.equal(again(X), ten(X)), file
    with pytest.raises(rk.modelling.checkpoint.CheckpointError, match=r"does not fit the model from timm:test_efficientnet"):
        rk.load_model(f"timm:{TIMM}", weights=tmp_path / "mine.pt")  # 10 classes into the 1000-class head


def test_timm_without_cached_weights_says_where_and_downloads_nothing(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    _no_downloads(monkeypatch)
    with pytest.raises(WeightsNotFoundError, match=r"models--timm--test_efficientnet\.r160_in1k .*pass --download"):
        rk.load_model(f"timm:{TIMM}")
    with pytest.raises(ValueError, match="did you mean resnet18"):
        rk.load_model("timm:resnt18")
    with pytest.raises(ValueError, match=r"its tags: resnet18\.a1_in1k"):
        rk.load_model("timm:resnet18.nope")


@pytest.fixture()
def torch_hub(tmp_path, monkeypatch):
    """torchvision's weights where torch's hub keeps them ($TORCH_HOME/hub/checkpoints/<file of the url>)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _no_downloads(monkeypatch)

    def write(arch):
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        torch.manual_seed(2)
        net = torchvision.models.get_model(arch).eval()
        path = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)
        return net, weights

    return write


def test_torchvision_model_is_torchvisions_pretrained_model_behind_its_transforms(torch_hub):
    net, weights = torch_hub("shufflenet_v2_x0_5")
    ours = rk.load_model("torchvision:shufflenet_v2_x0_5", device="cpu")
    transforms = weights.transforms()
    mean, std = torch.tensor(transforms.mean).view(1, 3, 1, 1), torch.tensor(transforms.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(ours(X), net((X - mean) / std), atol=1e-6)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (250, 300, 3), dtype=np.uint8))
    pixels = ours.robustkit_input.transform()(image)
    assert ours.robustkit_input.shape == (3, 224, 224)
    assert torch.allclose(ours.normalize(pixels[None])[0], transforms(image), atol=1e-6)


def test_torchvision_new_head_replaces_the_last_layer_linear_or_conv(torch_hub):
    for arch, head in (("shufflenet_v2_x0_5", "fc"), ("squeezenet1_1", "classifier.1")):
        net, _ = torch_hub(arch)
        ours = rk.load_model(f"torchvision:{arch}", num_classes=7, device="cpu")
        assert ours(X).shape == (2, 7)
        assert ours.net.get_submodule(head).weight.shape[0] == 7
        body = next(iter(net.state_dict()))
        assert torch.equal(ours.net.state_dict()[body], net.state_dict()[body])


def test_torchvision_without_cached_weights_says_where_and_downloads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    _no_downloads(monkeypatch)
    with pytest.raises(WeightsNotFoundError, match=r"hub/checkpoints/resnet18-f37072fd\.pth .*pass --download"):
        rk.load_model("torchvision:resnet18")
    with pytest.raises(ValueError, match="valid: IMAGENET1K_V1, DEFAULT"):
        rk.load_model("torchvision:resnet18.IMAGENET1K_V9")
    with pytest.raises(ValueError, match="torchvision has no classification model 'resnt18'; did you mean resnet18"):
        rk.load_model("torchvision:resnt18")
    with pytest.raises(ValueError, match="a model by name is timm:resnet18 or torchvision:resnet18"):
        rk.load_model("resnet18")


def write_cifar10(root, n_train=12, n_test=6):
    """CIFAR-10's official python files, a few random images each (fast; FakeData makes 1000 images per load)."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", n_train // 5 + 1) for i in range(1, 6)), ("test_batch", n_test)]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


@pytest.mark.parametrize("command", ["attack", "ood", "eval", "certify", "defend", "crosscheck", "recipe"])
def test_every_command_takes_a_model_by_name(hf_cache, tmp_path, monkeypatch, capsys, command):
    """--model timm:NAME --num-classes 10 on a few CIFAR-10 images in every command that takes a model."""
    monkeypatch.chdir(tmp_path)
    write_cifar10(tmp_path / "data")
    model = ["--model", f"timm:{TIMM}", "--num-classes", "10", "--device", "cpu", "--root", "data"]
    data = ["--dataset", "cifar10"]
    args = {
        "attack": ["attack", *model, *data, "--attack", "fgsm", "--eps", "2/255", "--limit", "4"],
        "ood": ["ood", *model, "--id", "cifar10", "--ood", "fakedata", "--detectors", "max_logit", "--limit", "4"],
        "eval": ["eval", *model, *data, "--attack", "fgsm", "--eps", "2/255", "--limit", "4", "--ood", "fakedata",
                 "--detector", "max_logit", "--no-progress"],
        "certify": ["certify", *model, *data, "--n0", "4", "--n", "8", "--limit", "2", "--no-attack"],
        "defend": ["defend", *model, *data, "--defense", "median_filter", "--limit", "4"],
        "crosscheck": ["crosscheck", "fgsm", *model, *data, "--limit", "2", "--eps", "2/255"],
        "recipe": ["run", "fgsm-sweep", *model, *data, "--limit", "4", "--eps", "0,0.01", "--no-progress", "--out", "recipe"],
    }[command]  # fmt: skip
    main(args)
    assert capsys.readouterr().out.strip()
    if command == "recipe":
        results = json.loads((tmp_path / "recipe" / "results.json").read_text())
        assert results["models"] == {"user": {"model": f"timm:{TIMM}", "weights": None}}
    if command == "eval":
        results = json.loads((tmp_path / "runs" / "eval-cifar10" / "results.json").read_text())
        assert results["model"]["input"]["shape"] == [3, 160, 160]


def test_a_named_models_thousand_classes_on_cifar_point_to_num_classes(hf_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_cifar10(tmp_path / "data")
    with pytest.raises(SystemExit) as stop:
        main(["attack", "--model", f"timm:{TIMM}", "--dataset", "cifar10", "--root", "data", "--limit", "2"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "it has 1000 outputs but cifar10 has 10 classes" in err
    assert "new head with --num-classes 10" in err
