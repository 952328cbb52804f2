"""A user's own model and data: torchvision ResNet-18 and a FakeData DataLoader through every entry point."""

import json
import re
import warnings

import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import ToTensor

import robustkit as rk
from robustkit.app.cli import main
from robustkit.evaluate import accuracy, eps_sweep, minimal_budget, ood, predict, robust_accuracy


def resnet18():
    """The factory the CLI tests name as module:factory (untrained is fine)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet():
    return resnet18()


class EveryClass(torch.utils.data.Dataset):
    """torchvision FakeData images (ToTensor: [0, 1] floats) labelled i % 10, so every class occurs."""

    def __init__(self, size: int):
        self.images = torchvision.datasets.FakeData(size=size, image_size=(3, 32, 32), transform=ToTensor())

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i][0], i % 10


@pytest.fixture(scope="module")
def fake():
    dataset = EveryClass(20)
    return dataset, DataLoader(dataset, batch_size=7)


def _stacked(dataset):
    xs, ys = zip(*[dataset[i] for i in range(len(dataset))], strict=True)
    return torch.stack(xs), torch.tensor(ys)


def test_every_library_entry_point_takes_a_loader_or_dataset(resnet, fake):
    dataset, loader = fake
    x, y = _stacked(dataset)
    fgsm = rk.attack("fgsm", eps=2 / 255)
    for data in (loader, dataset):
        assert torch.equal(predict(resnet, data), predict(resnet, x))
        assert accuracy(resnet, data) == accuracy(resnet, x, y)
        assert robust_accuracy(fgsm, resnet, data) == robust_accuracy(fgsm, resnet, x, y)
        assert eps_sweep(fgsm, resnet, data, eps_values=[0, 0.01]).accuracy == eps_sweep(fgsm, resnet, x, y, [0, 0.01]).accuracy
    # an attack on a loader runs on the loader's batches; on a Dataset, on batches of 256
    assert torch.equal(fgsm(resnet, loader), torch.cat([fgsm(resnet, x[i : i + 7], y[i : i + 7]) for i in range(0, 20, 7)]))
    assert torch.equal(fgsm(resnet, dataset), fgsm(resnet, x, y))
    assert torch.equal(minimal_budget(resnet, loader, max_k=3).k, minimal_budget(resnet, x, y, max_k=3).k)


def test_detectors_fit_and_score_a_torchvision_model_from_loaders(resnet, fake):
    dataset, loader = fake
    x, _ = _stacked(dataset)
    for name in ("max_logit", "energy", "mahalanobis", "knn", "vim"):
        params = {"k": 3} if name == "knn" else {}
        det = rk.detector(name, **params).fit(resnet, loader)
        from_loader, from_tensor = det.score(loader), det.score(x)
        assert from_loader.shape == (20,) and torch.isfinite(from_loader).all(), name
        if name != "mahalanobis":  # 20 points in 512 dimensions: its covariance is singular, scores ill-conditioned
            assert torch.allclose(from_loader, from_tensor, rtol=1e-3, atol=1e-4), name
    result = ood(rk.detector("max_logit").fit(resnet), loader, torch.rand(6, 3, 32, 32))
    assert 0 <= result.metrics["AUROC"] <= 1 and len(result.id_scores) == 20


def test_streamed_mahalanobis_equals_pytorch_ood_fit_features(model, digits_train, digits_test):
    """Accumulated class means and scatter give pytorch-ood's own scores."""
    from pytorch_ood.detector import Mahalanobis

    from robustkit.detectors.ood import penultimate

    ours = rk.detector("mahalanobis").fit(model, DataLoader(TensorDataset(digits_train.x, digits_train.y), batch_size=97))
    with torch.no_grad():
        reference = Mahalanobis(None).fit_features(penultimate(model, digits_train.x), digits_train.y)
        expected = reference.predict_features(penultimate(model, digits_test.x))
    assert torch.allclose(ours.score(digits_test.x), expected, rtol=1e-3, atol=1e-3)


def test_feature_detector_through_a_defense_wrapper(model, digits_train, digits_test):
    wrapped = rk.defense("bit_depth", bits=4).apply(model)
    scores = rk.detector("mahalanobis").fit(wrapped, digits_train).score(digits_test.x[:8])
    assert scores.shape == (8,) and torch.isfinite(scores).all()


def test_image_set_from_tensors_alone_and_bad_ones(fake):
    x, y = _stacked(fake[0])
    data = rk.ImageSet(x, y)
    assert data.info.shape == (3, 32, 32) and data.info.num_classes == int(y.max()) + 1 and len(data.info.mean) == 3
    with pytest.raises(TypeError, match="ImageSet takes tensors"):
        rk.ImageSet(x.numpy(), y)
    with pytest.raises(ValueError, match="one label per image"):
        rk.ImageSet(x, y[:3])
    with pytest.raises(TypeError, match="info must be a DatasetInfo"):
        rk.ImageSet(x, y, "cifar10")


def test_adversarial_training_and_squeezing_on_a_foreign_model_from_a_loader(fake):
    _, loader = fake
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trained = rk.defense(
        "adversarial_training", attack=rk.attack("fgsm", eps=0.01), train_config=rk.TrainConfig(epochs=1), progress=False
    ).apply(net, loader)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the caller's model is untouched
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert predict(rk.defense("median_filter", size=2).apply(net), loader).shape == (20,)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("loader_255", r"outside \[0, 1\]"),
        ("pairs_without_labels", r"\(image, label\) pairs"),
    ],
)
def test_bad_data_is_caught_in_fit_and_in_evaluation(resnet, fake, data, message):
    x, y = _stacked(fake[0])
    bad = {
        "loader_255": DataLoader(TensorDataset(x * 255, y), batch_size=4),
        "pairs_without_labels": DataLoader(x, batch_size=4),
    }[data]
    with pytest.raises((ValueError, TypeError), match=message):
        rk.detector("mahalanobis").fit(resnet, bad)
    with pytest.raises((ValueError, TypeError), match=message):
        accuracy(resnet, bad)


def test_labels_and_targets_are_asked_for_clearly(resnet, fake):
    x, y = _stacked(fake[0])
    with pytest.raises(TypeError, match="labels are missing"):
        accuracy(resnet, x)
    with pytest.raises(TypeError, match="carries its own labels"):
        accuracy(resnet, fake[1], y)
    with pytest.raises(TypeError, match="eps_values"):
        eps_sweep(rk.attack("fgsm"), resnet, fake[1])
    with pytest.raises(TypeError, match="target= needs images as a tensor"):
        robust_accuracy(rk.attack("fgsm"), resnet, fake[1], target=y)


def test_load_model_reads_state_dicts_torchscript_and_pickles(tmp_path, resnet):
    from robustkit.core.errors import CheckpointError
    from robustkit.modelling.loading import load_model

    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = resnet(x)
    torch.save(resnet.state_dict(), tmp_path / "state.pt")
    with warnings.catch_warnings():  # torch marks TorchScript deprecated; users still have such files
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(resnet, x), tmp_path / "scripted.pt")
    torch.save(resnet, tmp_path / "module.pt")
    factory = f"{__file__}:resnet18"
    loaded = {
        "state_dict + factory": load_model(factory, weights=tmp_path / "state.pt", device="cpu"),
        "torchscript": load_model(tmp_path / "scripted.pt", device="cpu"),
        "pickled, unsafe": load_model(tmp_path / "module.pt", unsafe_pickle=True, device="cpu"),
    }
    with torch.no_grad():
        for how, net in loaded.items():
            assert torch.allclose(net(x), expected, atol=1e-5), how
    with pytest.raises(CheckpointError, match="pass --model module:factory"):
        load_model(tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="--unsafe-pickle"):
        load_model(tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match=r"does not fit the model from torchvision\.models:resnet34: size mismatch"):
        load_model("torchvision.models:resnet34", weights=tmp_path / "state.pt")
    torch.save({"fc.weight": torch.zeros(10, 512)}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(factory, weights=tmp_path / "partial.pt")


def test_device_auto_and_clear_device_errors():
    from robustkit.core.checks import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("command", ["attack", "ood", "defend", "crosscheck"])
def test_cli_commands_take_a_users_model_and_weights(tmp_path, monkeypatch, capsys, resnet, command):
    """--model module:factory --weights state_dict on a torchvision ResNet-18, on 32×32 FakeData."""
    monkeypatch.chdir(tmp_path)
    torch.save(resnet.state_dict(), tmp_path / "state.pt")
    model = ["--model", f"{__file__}:resnet18", "--weights", "state.pt", "--device", "cpu"]
    args = {
        "attack": ["attack", *model, "--dataset", "fakedata", "--attack", "fgsm", "--eps", "2/255", "--limit", "8"],
        "ood": ["ood", *model, "--id", "fakedata", "--ood", "fakedata", "--detectors", "max_logit", "--limit", "8"],
        "defend": ["defend", *model, "--defense", "median_filter", "--dataset", "fakedata", "--eps", "2/255", "--limit", "8"],
        "crosscheck": ["crosscheck", "fgsm", *model, "--dataset", "fakedata", "--limit", "4", "--eps", "2/255"],
    }[command]
    main(args)
    out = capsys.readouterr().out
    assert out.strip()
    if command == "attack":
        results = json.loads((tmp_path / "runs" / "attack" / "results.json").read_text())
        assert results["robust_accuracy"] <= results["clean_accuracy"]
    if command == "crosscheck":
        assert "reference" in out and "torchattacks" in out
    if command == "ood":
        results = json.loads((tmp_path / "runs" / "ood" / "results.json").read_text())
        assert {c["name"] for c in results["checks"]} == {"ood_auroc (max_logit)", "ood_saturated (max_logit)"}


def _digits_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)
    )


def test_distillation_and_squeezed_training_train_fresh_copies_of_a_users_architecture(digits_train, digits_test):
    from robustkit.defenses.base import fresh_network

    net = _digits_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fresh = fresh_network(net, seed=1)
    assert all(not torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # re-initialised ...
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # ... and the original untouched
    config = rk.TrainConfig(epochs=4, lr=3e-3)
    loader = DataLoader(TensorDataset(digits_train.x, digits_train.y), batch_size=128)
    distiller = rk.defense("distillation", temperature=20, train_config=config, progress=False)
    student = distiller.apply(net, loader)
    squeezed = rk.defense("squeezed_training", squeezer="bit_depth:3", train_config=config, progress=False).apply(net, loader)
    for trained in (distiller.teacher, student, squeezed):
        assert accuracy(trained, digits_test.x, digits_test.y) > 0.6  # learned (chance: 0.1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(TypeError, match="reset_parameters"):

        class Scaled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.ones(1))

            def forward(self, x):
                return x.flatten(1)[:, :10] * self.scale

        fresh_network(Scaled(), seed=0)


def test_a_recipe_runs_on_the_users_model_and_weights(tmp_path, capsys):
    """--model module:factory --weights state_dict: the recipe uses the user's classifier instead of training one."""
    net = _digits_net()
    torch.save(net.state_dict(), tmp_path / "mine.pt")
    out = tmp_path / "run"
    main(["run", "fgsm-sweep", "--dataset", "digits", "--limit", "60", "--no-progress", "--eps", "0,0.1",
          "--model", f"{__file__}:_digits_net", "--weights", str(tmp_path / "mine.pt"), "--out", str(out)])  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["models"] == {"user": {"model": f"{__file__}:_digits_net", "weights": str(tmp_path / "mine.pt")}}
    assert results["untargeted"]["accuracy"][0] == accuracy(net, *_first(60))
    assert "not trained here" in (out / "report.md").read_text()


def _first(n):
    data = rk.load_dataset("digits", "test")
    return data.x[:n], data.y[:n]


def test_diagnose_samples_a_loader_without_loading_it_whole(model, digits_test):
    """The same seeded sample from a DataLoader (streamed) as from the tensors."""
    loader = DataLoader(TensorDataset(digits_test.x, digits_test.y), batch_size=50)
    from_loader = rk.diagnose(model, loader, sample=64, seed=3)
    from_tensors = rk.diagnose(model, (digits_test.x, digits_test.y), sample=64, seed=3)
    assert from_loader.sample == from_tensors.sample == 64
    assert from_loader.measured["clean_accuracy"] == from_tensors.measured["clean_accuracy"]


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def cifar_resnet():
    """A CIFAR-10 classifier as a user builds one: CIFAR's three-channel normalisation in front of a ResNet-18
    whose adaptive pooling takes any image size (so only the channel check stops it on 8×8 grey digits)."""
    torch.manual_seed(0)
    return rk.with_normalization(torchvision.models.resnet18(num_classes=10), CIFAR_MEAN, CIFAR_STD).eval()


def _digits_net_5():
    """A digits-shaped model with 5 outputs where digits has 10 classes."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))


GREY = r"normalises 3-channel images \(its mean/std have 3 values\) but got 1-channel images \(1×8×8\)"


def test_a_colour_model_refuses_grey_images_instead_of_broadcasting_them(digits_test):
    """Issue 23: a CIFAR model on 8×8 digits printed "clean 0.062, robust 0.040" and exit 0."""
    net, x, y = cifar_resnet(), digits_test.x[:4], digits_test.y[:4]
    with pytest.raises(ValueError, match=GREY + r".*--dataset"):
        net(x)
    with pytest.raises(ValueError, match=GREY):
        net.features(x)
    # the message survives probe (it converts RuntimeErrors), shape_errors and every backend
    with pytest.raises(ValueError, match=GREY):
        accuracy(net, x, y)
    with pytest.raises(ValueError, match=GREY):
        predict(net, x)
    for backend in ("reference", "torchattacks", "art"):
        with pytest.raises(ValueError, match=GREY):
            robust_accuracy(rk.attack("fgsm", backend, eps=0.1), net, x, y)
    with pytest.raises(ValueError, match=GREY):
        rk.diagnose(net, (x, y))
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 10)  # its own kind of input still runs
    grey = rk.with_normalization(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), (0.5,), (0.3,))
    assert grey(x).shape == (4, 10)  # one mean: nothing to mismatch


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attack", "--model", "cifar_resnet"],
         r"does not fit digits, the data set `robustkit attack` uses when --dataset is not given \(1×8×8 images, 10 "
         r"classes\): the model normalises 3-channel images .*: this is not the data it was made for\. Pass --dataset"),
        (["ood", "--model", "cifar_resnet", "--detectors", "max_logit"],
         r"does not fit digits, the data set `robustkit ood` uses when --id is not given .* Pass --id"),
        (["defend", "--model", "cifar_resnet", "--defense", "median_filter"],
         r"does not fit digits, the data set `robustkit defend` uses .* 1-channel images"),
        (["crosscheck", "fgsm", "--model", "cifar_resnet"], r"`robustkit crosscheck` uses when --dataset is not given"),
        (["attack", "--model", "resnet18", "--dataset", "digits"],
         r"does not fit --dataset digits \(1×8×8 images, 10 classes\): the model cannot take input of shape \(1, 8, 8\)"),
        (["eval", "--model", "_digits_net_5", "--dataset", "digits"],
         r"does not fit --dataset digits \(1×8×8 images, 10 classes\): it has 5 outputs but digits has 10 classes\. "
         r"Pass --dataset"),
        (["run", "fgsm-sweep", "--model", "cifar_resnet", "--dataset", "digits"], r"does not fit --dataset digits"),
    ],
)  # fmt: skip
def test_cli_checks_a_users_model_against_the_data_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    """One line, exit 2, nothing written or trained: the model runs on one test image of the data set first."""
    monkeypatch.chdir(tmp_path)
    at = args.index("--model") + 1
    args = [*args[:at], f"{__file__}:{args[at]}", *args[at + 1 :], "--device", "cpu", "--out", str(tmp_path / "run")]
    if args[0] == "crosscheck":
        args = args[:-2]  # crosscheck writes nothing
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()
