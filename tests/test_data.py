import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from robustkit.core.errors import DatasetNotFoundError
from robustkit.modelling.data import load_dataset


def test_digits_is_offline_and_in_pixel_range(digits_train, digits_test):
    assert digits_train.x.shape == (1347, 1, 8, 8) and digits_test.x.shape == (450, 1, 8, 8)
    assert digits_train.x.dtype == torch.float32 and digits_train.y.dtype == torch.int64
    assert float(digits_train.x.min()) == 0.0 and float(digits_train.x.max()) == 1.0
    assert digits_train.info.num_classes == 10 and set(digits_test.y.tolist()) == set(range(10))
    assert len(digits_train.info.mean) == 1 and 0 < digits_train.info.mean[0] < 1


def _write_cifar10(root, n_train=12, n_test=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [("data_batch_1", n_train), ("test_batch", n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    return folder


def test_cifar10_reads_official_python_batches(tmp_path):
    folder = _write_cifar10(tmp_path)
    data = load_dataset("cifar10", "train", root=tmp_path)
    raw = pickle.load(open(folder / "data_batch_1", "rb"))
    assert data.x.shape == (12, 3, 32, 32)
    # first pixel of image 0, channel-major layout as in the official files
    assert data.x[0, 0, 0, 0] == pytest.approx(raw["data"][0, 0] / 255)
    assert data.x[0, 1, 0, 0] == pytest.approx(raw["data"][0, 1024] / 255)
    assert data.y.tolist() == raw["labels"]
    assert data.info.classes[7] == "horse" and load_dataset("cifar10", root=tmp_path).x.shape[0] == 6


def test_cifar100_class_subset(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"c{i}" for i in range(100)]
    fine[9], fine[22], fine[61] = "bottle", "clock", "plate"
    labels = [9, 22, 5, 61, 9, 0]
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": np.zeros((6, 3072), np.uint8), "fine_labels": labels}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": fine}, f)
    data = load_dataset("cifar100:plate,bottle,clock", root=tmp_path)
    assert data.info.classes == ("bottle", "clock", "plate")
    assert data.y.tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="unknown CIFAR-100 classes"):
        load_dataset("cifar100:bottle,unicorn", root=tmp_path)


def test_mnist_from_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 5), ("t10k", 3)):
        images = np.arange(n * 784, dtype=np.uint8).reshape(n, 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([2051, n, 28, 28], ">i4").tobytes() + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            np.array([2049, n], ">i4").tobytes() + np.arange(n, dtype=np.uint8).tobytes()
        )
    data = load_dataset("mnist", "test", root=tmp_path)
    assert data.x.shape == (3, 1, 28, 28) and data.y.tolist() == [0, 1, 2]
    assert data.x[0, 0, 0, 5] == pytest.approx(5 / 255)


def test_imagefolder_and_fakedata(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "test" / cls / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path}")
    assert data.x.shape == (4, 3, 16, 16) and data.info.classes == ("cat", "dog")
    assert data.x[1].max() == pytest.approx(40 / 255)
    fake = load_dataset("fakedata", shape=(3, 16, 16), size=7)
    assert fake.x.shape == (7, 3, 16, 16) and fake.x.min() >= 0 and fake.x.max() <= 1
    assert torch.equal(fake.x, load_dataset("fakedata", shape=(3, 16, 16), size=7).x)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashionmnist", "svhn", "textures", "places365", "tinyimagenet"])
def test_missing_dataset_offline_says_how_to_get_it(tmp_path, name):
    with pytest.raises(DatasetNotFoundError, match="download=True"):
        load_dataset(name, root=tmp_path)


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="valid names: digits"):
        load_dataset("cifar11")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("digits", split="val")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("digits", limit=0)


def _jpegs(folder, names, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(folder / name)


def test_ood_sets_from_their_official_layouts(tmp_path, monkeypatch):
    """SVHN's .mat, DTD's label lists, Places365's file lists and Tiny ImageNet's annotations,
    the image sets resized to size×size and a seeded sample of them read."""
    import scipy.io
    import torchvision

    svhn = tmp_path / "svhn"
    svhn.mkdir()
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    scipy.io.savemat(svhn / "test_32x32.mat", {"X": pixels, "y": np.array([[10], [1], [2], [3], [4]])})
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)  # md5 of the real file
    data = load_dataset("svhn", root=tmp_path)
    assert data.x.shape == (5, 3, 32, 32) and data.y.tolist() == [0, 1, 2, 3, 4]
    assert data.x[0, 1, 2, 3] == pytest.approx(pixels[2, 3, 1, 0] / 255)

    dtd = tmp_path / "dtd" / "dtd"
    for cls in ("banded", "woven"):
        _jpegs(dtd / "images" / cls, [f"{cls}_{i}.jpg" for i in range(3)])
    (dtd / "labels").mkdir()
    (dtd / "labels" / "test1.txt").write_text("".join(f"{c}/{c}_{i}.jpg\n" for c in ("banded", "woven") for i in range(3)))
    textures = load_dataset("textures", root=tmp_path, size=12)
    assert textures.x.shape == (6, 3, 12, 12) and textures.info.classes == ("banded", "woven")
    sample = load_dataset("textures", root=tmp_path, size=12, sample=4, seed=1)
    assert len(sample) == 4 and torch.equal(sample.x, load_dataset("textures", root=tmp_path, size=12, sample=4, seed=1).x)

    places = tmp_path / "places365"
    _jpegs(places / "val_256", [f"Places365_val_{i}.jpg" for i in range(3)], size=(256, 256))
    (places / "categories_places365.txt").write_text("/a/airfield 0\n/b/bakery 1\n")
    (places / "places365_val.txt").write_text("".join(f"Places365_val_{i}.jpg {i % 2}\n" for i in range(3)))
    monkeypatch.setattr(torchvision.datasets.Places365, "_check_integrity", lambda self, file, md5, download: True)
    data = load_dataset("places365", root=tmp_path, size=8)
    assert data.x.shape == (3, 3, 8, 8) and data.y.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="only a test split"):
        load_dataset("places365", "train", root=tmp_path)

    tiny = tmp_path / "tiny-imagenet-200"
    _jpegs(tiny / "val" / "images", ["val_0.JPEG", "val_1.JPEG"], size=(64, 64))
    (tiny / "wnids.txt").write_text("n01\nn02\n")
    (tiny / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t1\t1\nval_1.JPEG\tn01\t0\t0\t1\t1\n")
    data = load_dataset("tinyimagenet", root=tmp_path)
    assert data.x.shape == (2, 3, 32, 32) and data.y.tolist() == [1, 0] and data.info.classes == ("n01", "n02")


def test_match_shape_and_seeded_sample(digits_test):
    from robustkit.modelling.data import match_shape

    colour = match_shape(digits_test, (3, 32, 32))
    assert colour.x.shape == (450, 3, 32, 32) and torch.equal(colour.x[:, 0], colour.x[:, 2]) and torch.equal(colour.y, digits_test.y)
    assert colour.info.shape == (3, 32, 32) and float(colour.x.min()) >= 0 and float(colour.x.max()) <= 1
    assert abs(float(colour.x.mean()) - float(digits_test.x.mean())) < 0.01  # resizing keeps the brightness
    grey = match_shape(match_shape(digits_test, (3, 8, 8)), (1, 8, 8))  # luminance of a grey image is the image
    assert torch.allclose(grey.x, digits_test.x, atol=1e-6)
    assert match_shape(digits_test, (1, 8, 8)) is digits_test
    with pytest.raises(ValueError, match="1 or 3 channels"):
        match_shape(digits_test, (2, 8, 8))
    sample = digits_test.sample(50, seed=3)
    assert len(sample) == 50 and torch.equal(sample.x, digits_test.sample(50, seed=3).x)
    assert not torch.equal(sample.x, digits_test.sample(50, seed=4).x) and digits_test.sample(None) is digits_test
