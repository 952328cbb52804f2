"""Datasets as in-memory `[0, 1]` float tensors that carry their own description.

Names understood by `load_dataset`:

- ``digits``: scikit-learn's 8×8 handwritten digits, embedded, always offline;
- ``cifar10`` and ``cifar100`` (``cifar100:bottle,clock`` keeps those classes only);
- ``mnist``, ``fashionmnist``; ``fakedata`` (torchvision's random-noise images, ``shape=`` of the ID set);
- ``imagefolder:PATH`` (``PATH/<split>/<class>/*.png`` or ``PATH/<class>/*.png``);
- the OOD sets of OpenOOD's CIFAR benchmarks: ``svhn``, ``textures`` (DTD), ``places365``
  (its 256×256 validation images) and ``tinyimagenet`` (Tiny ImageNet's validation images),
  the last three resized to ``size=`` (default 32) and read only ``sample=`` of them when given;
- ``imagenet`` (``imagenet:robustbench`` for RobustBench's 5000 images) and the OpenOOD v1.5 ImageNet-1K
  OOD lists ``openood:NAME``: streamed from folders as `ImageFiles` (`robustkit.modelling.folders`),
  never loaded whole.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..core.errors import DatasetNotFoundError
from .batches import labelled_batches
from .folders import ImageFiles, load_imagenet, load_openood
from .info import DatasetInfo, pick_indices

SPLITS = ("train", "test")
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
MNIST_STATS = ((0.1307,), (0.3081,))


def default_root() -> Path:
    """Where datasets live: ``$ROBUSTKIT_DATA`` or ``~/.cache/robustkit/data``."""
    return Path(os.environ.get("ROBUSTKIT_DATA", Path.home() / ".cache" / "robustkit" / "data"))


@dataclass
class ImageSet:
    """Images ``x`` (N×C×H×W float32 in [0, 1]), labels ``y`` (int64) and their info.

    ``ImageSet(x, y)`` infers the info (classes 0..max(y), shape, per-channel mean and std).
    """

    x: torch.Tensor
    y: torch.Tensor
    info: DatasetInfo | None = None  # type: ignore[assignment]
    split: str = "test"

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise TypeError(
                f"ImageSet takes tensors x (N×C×H×W) and y (N,), got {type(self.x).__name__} and {type(self.y).__name__}"
            )
        if self.x.ndim != 4 or len(self.x) != len(self.y):
            raise ValueError(
                f"ImageSet needs x of shape N×C×H×W and one label per image; got x {tuple(self.x.shape)}, "
                f"y {tuple(self.y.shape)}"
            )
        if self.info is None:
            mean, std = _stats(self.x) if len(self.x) else ((0.5,) * self.x.shape[1], (0.29,) * self.x.shape[1])
            n_classes = int(self.y.max()) + 1 if len(self.y) and self.y.ndim == 1 else 0
            self.info = DatasetInfo(
                "tensors", tuple(str(i) for i in range(n_classes)), tuple(self.x.shape[1:]), mean, std  # type: ignore[arg-type]
            )
        elif not isinstance(self.info, DatasetInfo):
            raise TypeError(f"info must be a DatasetInfo (or None to infer it), got {type(self.info).__name__}")

    def __len__(self) -> int:
        return len(self.y)

    def loader(self, batch_size: int = 256, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader over ``(x, y)`` batches (seeded when shuffled)."""
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(TensorDataset(self.x, self.y), batch_size=batch_size, shuffle=shuffle, generator=generator)

    def take(self, n: int | None) -> ImageSet:
        """The first ``n`` images (all of them for ``None``)."""
        return self if n is None else replace(self, x=self.x[:n], y=self.y[:n])

    def sample(self, n: int | None, seed: int = 0) -> ImageSet:
        """``n`` images drawn at random with ``seed``, kept in their order (all of them for
        ``None`` or ``n`` ≥ the size)."""
        return self if n is None or n >= len(self) else self.select(torch.from_numpy(pick_indices(len(self), n, seed)))

    def select(self, index: torch.Tensor) -> ImageSet:
        """The images at ``index`` (a bool mask or integer indices)."""
        return replace(self, x=self.x[index], y=self.y[index])

    def fingerprint(self) -> str:
        """A short hash of the pixels and labels, used in model-cache keys."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(self.x.numpy().tobytes())
        digest.update(self.y.numpy().tobytes())
        return digest.hexdigest()


Data = Any
"""What robustkit accepts as a labelled data set: an ImageSet, a DataLoader or Dataset of
``(image, label)`` pairs, or an ``(x, y)`` pair of tensors."""


def as_image_set(data: Data) -> ImageSet:
    """Turn an ImageSet, a DataLoader, a Dataset or an ``(x, y)`` pair into an ImageSet."""
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return ImageSet(data[0], data[1])
    if isinstance(data, torch.utils.data.Dataset):
        data = DataLoader(data, batch_size=512)
    if isinstance(data, DataLoader):
        info = getattr(data.dataset, "info", None)  # robustkit's streamed sets carry theirs
        xs, ys = [], []
        for batch in data:
            xs.append(batch[0])
            ys.append(torch.as_tensor(batch[1]))
        return ImageSet(torch.cat(xs), torch.cat(ys), info if isinstance(info, DatasetInfo) else None)
    raise TypeError(
        f"expected an ImageSet, a DataLoader or Dataset of (image, label) pairs, or an (x, y) pair; "
        f"got {type(data).__name__}"
    )


IN_MEMORY_LIMIT = 4 * 2**30
"""Bytes of float32 pixels a command that holds its images in memory reads from a streamed set (`in_memory`)."""


def in_memory(data: ImageSet | ImageFiles | FakeImages, command: str) -> ImageSet:
    """``data`` as an ImageSet, for the commands that hold their images: a streamed set (``imagenet``) is read
    whole when its pixels fit in `IN_MEMORY_LIMIT`, else a ValueError names the size and the way out."""
    if isinstance(data, ImageSet):
        return data
    size = len(data) * int(np.prod(data.info.shape)) * 4
    if size > IN_MEMORY_LIMIT:
        raise ValueError(
            f"{command} holds its images in memory, and {len(data)} {data.info.name} images take {size / 1e9:.1f} GB: "
            "pass --limit N (for example 1000), or use robustkit eval, which streams them"
        )
    return as_image_set(data)


def seeded_sample(data: Data, sample: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``sample`` labelled images of any data robustkit takes, drawn without replacement with
    ``seed`` and kept in their order (all of them for ``None`` or a smaller set). A Dataset or
    DataLoader is streamed and only the sampled rows are kept (a shuffled loader gives another,
    equally random, sample)."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise ValueError(f"sample={sample!r} must be a positive integer (or None for all points)")
    if isinstance(data, (DataLoader, Dataset)) and not isinstance(data, ImageSet) and sample is not None:
        total = len(data.dataset if isinstance(data, DataLoader) else data)  # type: ignore[arg-type]
        if sample < total:
            keep = set(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:sample].tolist())
            if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
                picked = as_image_set(torch.utils.data.Subset(data, sorted(keep)))  # read only those (ImageNet's files)
                return picked.x, picked.y
            xs, ys, offset = [], [], 0
            for xb, yb in labelled_batches(data, None, 256):
                rows = [i for i in range(len(xb)) if offset + i in keep]
                xs.append(xb[rows])
                ys.append(yb[rows])
                offset += len(xb)
            return torch.cat(xs), torch.cat(ys)
    data = as_image_set(data)
    x, y = data.x, data.y
    if sample is None or sample >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:sample].sort().values
    return x[idx.to(x.device)], y[idx.to(y.device)]


def match_shape(data: ImageSet | ImageFiles | FakeImages, shape: tuple[int, ...]) -> ImageSet | ImageFiles | FakeImages:
    """``data`` with its images brought to ``shape`` (C×H×W), as OOD benchmarks feed another data
    set to a classifier: grey to colour by repeating the channel, colour to grey by luminance
    (ITU-R 601 weights), then a bilinear, antialiased resize to H×W. Labels and info's classes stay.
    Streamed `ImageFiles` are preprocessed to their shape as they are read, so theirs must be ``shape``."""
    import torch.nn.functional as F

    c, h, w = (int(v) for v in shape)
    if isinstance(data, (ImageFiles, FakeImages)):
        if tuple(data.info.shape) != (c, h, w):
            raise ValueError(
                f"{data.info.name} is read as {'×'.join(map(str, data.info.shape))} images but the ID images are "
                f"{c}×{h}×{w}; load it with size={w} (streamed sets are preprocessed as they are read)"
            )
        return data
    x = data.x
    if x.shape[1] != c:
        if (x.shape[1], c) == (1, 3):
            x = x.repeat(1, 3, 1, 1)
        elif (x.shape[1], c) == (3, 1):
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot turn {x.shape[1]}-channel images into {c}-channel ones; use a set with 1 or 3 channels")
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    if x is data.x:
        return data
    mean, std = _stats(x) if len(x) else (data.info.mean, data.info.std)
    info = replace(data.info, shape=(c, h, w), mean=mean, std=std)
    return replace(data, x=x.contiguous(), info=info)


def _from_uint8(images: np.ndarray, labels: np.ndarray, info: DatasetInfo | None, split: str) -> ImageSet:
    """Build an ImageSet from uint8 N×C×H×W pixels."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return ImageSet(x, torch.as_tensor(np.asarray(labels), dtype=torch.int64), info, split)


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _digits(split: str, **_: object) -> ImageSet:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # N×1×8×8 in [0, 1]
    parts = train_test_split(images, bunch.target, test_size=0.25, stratify=bunch.target, random_state=0)
    x_train, x_test, y_train, y_test = (torch.from_numpy(np.asarray(p)) for p in parts)
    mean, std = _stats(x_train)
    info = DatasetInfo("digits", tuple(str(i) for i in range(10)), (1, 8, 8), mean, std)
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return ImageSet(x.contiguous(), y.long(), info, split)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def _missing(what: str, folder: Path, how: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{what} not found at {folder}. Pass download=True (CLI: --download) to fetch it, or put "
        f"{how} there (the data root is set by root= or $ROBUSTKIT_DATA)"
    )


def _cifar_folder(kind: str, root: Path, download: bool) -> Path:
    import torchvision

    folder_name, cls = {
        "cifar10": ("cifar-10-batches-py", torchvision.datasets.CIFAR10),
        "cifar100": ("cifar-100-python", torchvision.datasets.CIFAR100),
    }[kind]
    folder = root / folder_name
    if not folder.is_dir():
        if not download:
            raise _missing(kind.upper(), folder, "the official python version (cifar-*-python.tar.gz, extracted)")
        cls(str(root), train=True, download=True)  # torchvision checks the md5 sums
    return folder


def _cifar10(split: str, root: Path, download: bool, **_: object) -> ImageSet:
    folder = _cifar_folder("cifar10", root, download)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    present = [folder / f for f in files if (folder / f).exists()]
    if not present:
        raise _missing(f"CIFAR-10 {split} batches", folder, " ".join(files))
    batches = [_unpickle(p) for p in present]
    data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([b["labels"] for b in batches])
    names = tuple(_unpickle(folder / "batches.meta")["label_names"])
    return _from_uint8(data, labels, DatasetInfo("cifar10", names, (3, 32, 32), *CIFAR10_STATS), split)


def _cifar100(split: str, root: Path, download: bool, arg: str | None = None, **_: object) -> ImageSet:
    folder = _cifar_folder("cifar100", root, download)
    if not (folder / split).exists():
        raise _missing(f"CIFAR-100 {split} file", folder, f"'{split}' and 'meta'")
    batch = _unpickle(folder / split)
    names = list(_unpickle(folder / "meta")["fine_label_names"])
    data = np.asarray(batch["data"]).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch["fine_labels"])
    if arg:
        wanted = [c.strip() for c in arg.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise ValueError(f"unknown CIFAR-100 classes {unknown}; valid names: {', '.join(names)}")
        index = [names.index(c) for c in wanted]
        keep = np.isin(labels, index)
        data, labels = data[keep], np.searchsorted(np.sort(index), labels[keep])
        names = sorted(wanted, key=names.index)
    name = "cifar100" + (f":{','.join(names)}" if arg else "")
    return _from_uint8(data, labels, DatasetInfo(name, tuple(names), (3, 32, 32), *CIFAR100_STATS), split)


def _mnist(split: str, root: Path, download: bool, **_: object) -> ImageSet:
    import torchvision

    try:
        ds = torchvision.datasets.MNIST(str(root), train=split == "train", download=download)
    except RuntimeError:
        raise _missing("MNIST", root / "MNIST" / "raw", "the four uncompressed idx files") from None
    info = DatasetInfo("mnist", tuple(str(i) for i in range(10)), (1, 28, 28), *MNIST_STATS)
    return _from_uint8(ds.data.numpy()[:, None], ds.targets.numpy(), info, split)


def _fashionmnist(split: str, root: Path, download: bool, **_: object) -> ImageSet:
    import torchvision

    try:
        ds = torchvision.datasets.FashionMNIST(str(root), train=split == "train", download=download)
    except RuntimeError:
        raise _missing("Fashion-MNIST", root / "FashionMNIST" / "raw", "the four uncompressed idx files") from None
    info = DatasetInfo("fashionmnist", tuple(ds.classes), (1, 28, 28), (0.2860,), (0.3530,))
    return _from_uint8(ds.data.numpy()[:, None], ds.targets.numpy(), info, split)


def _svhn(split: str, root: Path, download: bool, **_: object) -> ImageSet:
    """SVHN's cropped digits (``test_32x32.mat`` / ``train_32x32.mat`` under ROOT/svhn)."""
    import torchvision

    try:
        ds = torchvision.datasets.SVHN(str(root / "svhn"), split=split, download=download)
    except RuntimeError:
        raise _missing("SVHN", root / "svhn", f"{split}_32x32.mat from http://ufldl.stanford.edu/housenumbers/") from None
    info = DatasetInfo("svhn", tuple(str(i) for i in range(10)), (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197))
    return _from_uint8(ds.data, ds.labels, info, split)


def _read_files(
    name: str, files: list[tuple[str, int]], classes: tuple[str, ...], split: str, size: int, sample: int | None, seed: int
) -> ImageSet:
    """Decode ``sample`` (seeded) of the ``(path, label)`` files, each resized and centre-cropped to size×size RGB."""
    from PIL import Image

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}: size={size!r} must be a positive number of pixels")
    index = pick_indices(len(files), sample, seed)
    images = np.empty((len(index), 3, size, size), dtype=np.uint8)
    for row, i in enumerate(index):
        with Image.open(files[i][0]) as image:
            images[row] = np.asarray(_square(image.convert("RGB"), size)).transpose(2, 0, 1)
    labels = np.asarray([files[i][1] for i in index], dtype=np.int64)
    out = _from_uint8(images, labels, None, split)
    mean, std = _stats(out.x) if len(out) else ((0.5,) * 3, (0.29,) * 3)
    return replace(out, info=DatasetInfo(name, classes, (3, size, size), mean, std))


def _textures(
    split: str, root: Path, download: bool, size: int = 32, sample: int | None = None, seed: int = 0, **_: object
) -> ImageSet:
    """The Describable Textures Dataset (DTD, partition 1), under ROOT/dtd."""
    import torchvision

    try:
        ds = torchvision.datasets.DTD(str(root), split=split, download=download)
    except RuntimeError:
        raise _missing("Textures (DTD)", root / "dtd" / "dtd", "the extracted dtd-r1.0.1.tar.gz (dtd/images, dtd/labels)") from None
    files = [(str(f), label) for f, label in zip(ds._image_files, ds._labels, strict=True)]
    return _read_files("textures", files, tuple(ds.classes), split, size, sample, seed)


def _places365(
    split: str, root: Path, download: bool, size: int = 32, sample: int | None = None, seed: int = 0, **_: object
) -> ImageSet:
    """Places365-Standard's 36 500 validation images at 256×256 (the test split), under ROOT/places365."""
    import torchvision

    if split != "test":
        raise ValueError("places365 has only a test split here (Places365's validation images); load it with split='test'")
    try:
        ds = torchvision.datasets.Places365(str(root / "places365"), split="val", small=True, download=download)
    except RuntimeError:
        raise _missing(
            "Places365", root / "places365", "categories_places365.txt, places365_val.txt and the extracted val_256.tar"
        ) from None
    return _read_files("places365", list(ds.imgs), tuple(ds.classes), split, size, sample, seed)


TINY_IMAGENET = ("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")


def _tinyimagenet(
    split: str, root: Path, download: bool, size: int = 32, sample: int | None = None, seed: int = 0, **_: object
) -> ImageSet:
    """Tiny ImageNet (200 classes, 64×64) under ROOT/tiny-imagenet-200: its labelled validation
    images are the test split, its training images the train split."""
    folder = root / "tiny-imagenet-200"
    if not (folder / "wnids.txt").is_file() and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_IMAGENET[0], str(root), md5=TINY_IMAGENET[1])
    if not (folder / "wnids.txt").is_file():
        raise _missing("Tiny ImageNet", folder, f"the extracted {TINY_IMAGENET[0].rsplit('/', 1)[-1]} (wnids.txt, train/, val/)")
    wnids = tuple((folder / "wnids.txt").read_text().split())
    label = {w: i for i, w in enumerate(wnids)}
    if split == "test":
        rows = [line.split("\t") for line in (folder / "val" / "val_annotations.txt").read_text().splitlines() if line]
        files = [(str(folder / "val" / "images" / r[0]), label[r[1]]) for r in rows]
    else:
        files = [(str(f), label[w]) for w in wnids for f in sorted((folder / "train" / w / "images").glob("*.JPEG"))]
    return _read_files("tinyimagenet", files, wnids, split, size, sample, seed)


class FakeImages(torch.utils.data.Dataset):
    """``fakedata`` made one image at a time (``stream=True``): the same images as the in-memory set, for ID
    sets too large to hold (an ImageNet-size test set's noise twin)."""

    def __init__(self, fake: Any, info: DatasetInfo, index: Any = None):
        self.fake, self.info = fake, info
        self.index = np.arange(len(fake)) if index is None else np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.transforms.functional import pil_to_tensor

        image = pil_to_tensor(self.fake[int(self.index[i])][0]).reshape(self.info.shape)
        return image.float().div_(255.0), 0

    def take(self, n: int | None) -> FakeImages:
        """The first ``n`` images (all of them for ``None``)."""
        return self if n is None else FakeImages(self.fake, self.info, self.index[:n])

    def sample(self, n: int | None, seed: int = 0) -> FakeImages:
        """``n`` of the images drawn with ``seed``, in their order (all for ``None`` or ``n`` ≥ the size)."""
        return FakeImages(self.fake, self.info, self.index[pick_indices(len(self), n, seed)])


def _fakedata(
    split: str, shape: tuple[int, int, int] = (3, 32, 32), size: int = 1000, seed: int = 0, stream: bool = False, **_: object
) -> ImageSet | FakeImages:
    import torchvision
    from torchvision.transforms.functional import pil_to_tensor

    offset = seed * 1_000_003 + (0 if split == "test" else 500_009)
    ds = torchvision.datasets.FakeData(size=size, image_size=tuple(shape), num_classes=10, random_offset=offset)
    info = DatasetInfo(
        "fakedata", tuple(str(i) for i in range(10)), tuple(shape), (0.5,) * shape[0], (0.29,) * shape[0]
    )
    if stream:
        return FakeImages(ds, info)
    images = np.stack([pil_to_tensor(ds[i][0]).numpy() for i in range(size)])
    labels = np.zeros(size, dtype=np.int64)
    return _from_uint8(images.reshape(size, *shape), labels, info, split)


def _imagefolder_options(arg: str) -> tuple[Path, int | None]:
    """``PATH`` or ``PATH?size=N`` → (path, size or None)."""
    path, _, query = arg.partition("?")
    size = None
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key != "size":
            raise ValueError(f"imagefolder: unknown option {key!r} in {arg!r}; valid: size (e.g. imagefolder:PATH?size=32)")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"imagefolder: size must be a positive integer, got {value!r} in {arg!r}")
        size = int(value)
    return Path(path).expanduser(), size


def _square(image: Any, size: int) -> Any:
    """Resize a PIL image so its shorter side is ``size`` (antialiased), then centre-crop to size×size."""
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _imagefolder(split: str, arg: str | None = None, **_: object) -> ImageSet:
    """``imagefolder:PATH`` (all images one size) or ``imagefolder:PATH?size=N`` (any sizes:
    each image is resized so its shorter side is N, then centre-cropped to N×N)."""
    import torchvision
    from torchvision.transforms.functional import pil_to_tensor

    if not arg:
        raise ValueError("imagefolder needs a path: 'imagefolder:PATH' (or 'imagefolder:PATH?size=32' to resize)")
    base, size = _imagefolder_options(arg)
    folder = base / split if (base / split).is_dir() else base
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {folder} does not exist; expected PATH/<class>/<image files>")
    ds = torchvision.datasets.ImageFolder(str(folder))
    if len(ds) == 0:
        raise DatasetNotFoundError(f"no images under {folder}; expected PATH/<class>/<image files>")

    def read(path: str) -> torch.Tensor:
        image = ds.loader(path).convert("RGB")
        return pil_to_tensor(image if size is None else _square(image, size))

    first = read(ds.samples[0][0])
    images = np.empty((len(ds), *first.shape), dtype=np.uint8)
    for i, (path, _) in enumerate(ds.samples):
        image = read(path)
        if image.shape != first.shape:
            raise ValueError(
                f"{path} is {tuple(image.shape)} but the first image is {tuple(first.shape)}; "
                f"load the folder as 'imagefolder:{base}?size=32' to resize every image to 32×32"
            )
        images[i] = image.numpy()
    out = _from_uint8(images, np.asarray(ds.targets), None, split)
    mean, std = _stats(out.x)
    return replace(out, info=DatasetInfo(f"imagefolder:{arg}", tuple(ds.classes), tuple(first.shape), mean, std))


LOADERS: dict[str, Callable[..., ImageSet]] = {
    "digits": _digits,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "mnist": _mnist,
    "fashionmnist": _fashionmnist,
    "fakedata": _fakedata,
    "imagefolder": _imagefolder,
    "svhn": _svhn,
    "textures": _textures,
    "places365": _places365,
    "tinyimagenet": _tinyimagenet,
    "imagenet": load_imagenet,
    "openood": load_openood,
}


def load_dataset(
    name: str,
    split: str = "test",
    root: str | Path | None = None,
    download: bool = False,
    limit: int | None = None,
    **options: object,
) -> ImageSet | ImageFiles | FakeImages:
    """Load a dataset split as an `ImageSet` of `[0, 1]` float tensors, or, for the folder-based
    ImageNet-size sets (``imagenet``, ``openood:NAME``), as a streamed `ImageFiles` Dataset.

    ``name`` may carry an argument after a colon (``cifar100:bottle,clock``,
    ``imagefolder:PATH``, ``imagenet:robustbench``). ``limit`` keeps the first ``limit`` images.
    ``options`` go to the loader (``shape=``, ``size=``, ``seed=`` for ``fakedata``; ``size=``,
    ``sample=``, ``seed=`` for ``textures``, ``places365``, ``tinyimagenet`` and ``openood``;
    ``stream=True`` makes ``fakedata`` a Dataset that draws each image when read).
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    base, _, arg = name.partition(":")
    if base not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(LOADERS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit={limit} must be a positive number of images")
    root = Path(root) if root is not None else default_root()
    data = LOADERS[base](split=split, root=root, download=download, arg=arg or None, **options)
    return data.take(limit)
