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


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist"])
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
