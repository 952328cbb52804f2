"""Image data sets read from folders of files and streamed: ImageNet's validation folder, OpenOOD's image lists.

An `ImageFiles` is a map-style ``torch.utils.data.Dataset`` of ``(image, label)`` pairs that decodes
one file per item, so evaluation streams it batch by batch and memory does not grow with the data set.

- ``imagenet``: ILSVRC2012 in the class-folder layout torchvision's ``ImageNet`` and RobustBench read,
  ``ROOT/imagenet/val/<wnid>/*.JPEG`` (test split) and ``ROOT/imagenet/train/<wnid>/*.JPEG`` (train), with
  the official class index (the position of the wnid among the 1000 sorted ones, torchvision's and
  RobustBench's ``class_to_idx``) and RobustBench's preprocessing ``Res256Crop224`` (Resize(256),
  CenterCrop(224), ToTensor), or another of RobustBench's (`PREPROCESSINGS`, as its model zoo names
  them per model: ``imagenet:BicubicRes256Crop224``). ``imagenet:robustbench`` (or ``imagenet:PATH``)
  reads only the images of RobustBench's evaluation list, ``helper_files/imagenet_test_image_ids.txt``
  (5000 ``wnid/file.JPEG`` lines), in its order, as ``robustbench.data.load_imagenet`` does; the two
  combine with a comma (``imagenet:robustbench,Crop288``).
- ``openood:NAME``: an OpenOOD v1.5 image list, ``ROOT/openood/benchmark_imglist/imagenet/test_NAME.txt``
  (``relative/path label`` lines), with its images under ``ROOT/openood/images_largescale/`` (Textures:
  ``images_classic/``), OpenOOD's ``data/`` folder as its download script lays it out; the ImageNet-1K
  OOD sets are ``ssb_hard``, ``ninco`` (near), ``inaturalist``, ``textures``, ``openimage_o`` (far).

Papers: Russakovsky et al. 2015 (ImageNet); Croce et al. 2021 (RobustBench); Zhang et al. 2023 (OpenOOD v1.5).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.errors import DatasetNotFoundError
from .info import DatasetInfo, pick_indices

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DEFAULT_PREPROCESSING = "Res256Crop224"
PREPROCESSINGS: dict[str, tuple[tuple[str, Any, str | None], ...]] = {
    "Res256Crop224": (("resize", 256, None), ("crop", 224, None)),
    "BicubicRes256Crop224": (("resize", 256, "bicubic"), ("crop", 224, None)),
    "Res224": (("resize", [224, 224], None),),
    "Crop288": (("crop", 288, None),),
}
"""RobustBench's ImageNet preprocessings (``robustbench.data.PREPROCESSINGS``, 1.1.1), each followed by ToTensor:
``Res256Crop224`` is torchvision's ImageNet evaluation (shorter side to 256, bilinear and antialiased, centre
224×224) and most models'; ``BicubicRes256Crop224`` the same with bicubic; ``Res224`` squashes to 224×224;
``Crop288`` takes the centre 288×288 of the unresized image. ``ResNCropN`` (e.g. ``Res32Crop32``) is the
shorter side to N and the centre N×N."""

ROBUSTBENCH_LIST = "helper_files/imagenet_test_image_ids.txt"
OPENOOD_NEAR = ("ssb_hard", "ninco")
OPENOOD_FAR = ("inaturalist", "textures", "openimage_o")
OPENOOD_CLASSIC = ("textures",)
"""OpenOOD's ImageNet-1K OOD sets (near, far); Textures' images sit under ``images_classic/``, the others'
under ``images_largescale/`` (OpenOOD v1.5's ``DATA_INFO``)."""


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 wnids in the official class order (sorted: index 0 is n01440764, the tench)."""
    from importlib.resources import files

    return tuple(files("robustkit.modelling").joinpath("imagenet_wnids.txt").read_text().split())


@functools.lru_cache(maxsize=1)
def _class_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_classes())}


RESIZE_CROP = re.compile(r"(Bicubic)?Res(\d+)Crop(\d+)")


def _steps(name: str) -> tuple[tuple[str, Any, str | None], ...]:
    if name in PREPROCESSINGS:
        return PREPROCESSINGS[name]
    match = RESIZE_CROP.fullmatch(name)
    if match is None or int(match[2]) < 1 or int(match[3]) < 1:
        raise ValueError(
            f"unknown preprocessing {name!r}; valid: {', '.join(PREPROCESSINGS)} or (Bicubic)ResNCropM (e.g. Res32Crop32)"
        )
    return (("resize", int(match[2]), "bicubic" if match[1] else None), ("crop", int(match[3]), None))


def preprocessing_name(resize: int | Sequence[int] | None, crop: int | None, interpolation: str = "bilinear") -> str | None:
    """The `PREPROCESSINGS` name of resizing the shorter side to ``resize`` (or to exactly ``resize`` when a
    pair) with ``interpolation``, then cropping the centre ``crop``; ``None`` when no name says it."""
    bicubic = {"bilinear": "", "bicubic": "Bicubic"}.get(interpolation)
    if bicubic is None:
        return None
    if isinstance(resize, int) and crop:
        return f"{bicubic}Res{resize}Crop{crop}"
    if resize is not None and not isinstance(resize, int) and list(resize) == [224, 224] and not crop and not bicubic:
        return "Res224"
    if resize is None and crop == 288:
        return "Crop288"
    return None


def with_model_preprocessing(dataset: str, resize: Any, crop: int | None, interpolation: str, origin: str) -> str:
    """``dataset`` as the model needs it: an ImageNet name (``imagenet``, ``imagenet:robustbench``) that names no
    preprocessing gets the model's (its resize, crop and interpolation, from ``origin``: RobustBench's zoo, timm's
    or torchvision's config), so the images reach it as it was evaluated; any other name is returned as it is."""
    base, _, arg = dataset.partition(":")
    parts = list(filter(None, (arg or "").split(",")))
    if base != "imagenet" or any(p in PREPROCESSINGS or RESIZE_CROP.fullmatch(p) for p in parts):
        return dataset
    name = preprocessing_name(resize, crop, interpolation)
    if name == DEFAULT_PREPROCESSING:
        return dataset
    if name is None:
        raise ValueError(
            f"the model wants its images resized to {resize} and cropped to {crop} ({interpolation}; {origin}), which "
            f"no ImageNet preprocessing of robustkit's repeats; name one with --dataset imagenet:PREPROCESSING "
            f"({', '.join(PREPROCESSINGS)} or (Bicubic)ResNCropM)"
        )
    return f"imagenet:{','.join([*parts, name])}"


def image_side(name: str) -> int:
    """The side of the square images preprocessing ``name`` makes (224 for ``Res256Crop224``)."""
    size = _steps(name)[-1][1]
    return size[0] if isinstance(size, list) else size


@functools.lru_cache(maxsize=8)
def preprocessing(name: str = DEFAULT_PREPROCESSING) -> Any:
    """The torchvision transform of preprocessing ``name`` (`PREPROCESSINGS`), ending with ToTensor: RobustBench's,
    op for op."""
    from torchvision import transforms

    ops = []
    for kind, size, interpolation in _steps(name):
        if kind == "resize":
            mode = transforms.InterpolationMode(interpolation) if interpolation else transforms.InterpolationMode.BILINEAR
            ops.append(transforms.Resize(size, interpolation=mode))
        else:
            ops.append(transforms.CenterCrop(size))
    return transforms.Compose([*ops, transforms.ToTensor()])


def read_rgb(path: str | Path) -> Any:
    """The image at ``path`` as an RGB PIL image (RobustBench's and torchvision's ``pil_loader``)."""
    from PIL import Image

    with open(path, "rb") as handle:
        image = Image.open(handle)
        return image.convert("RGB")


@dataclass(frozen=True)
class ImageFiles(Dataset):
    """Labelled image files, decoded and preprocessed one at a time: ``dataset[i]`` is ``(3×S×S float32 in [0, 1],
    label)`` after ``preprocessing`` (`PREPROCESSINGS`). ``relative[i]`` names image i inside its folder
    (``wnid/file.JPEG``), which is how ImageNet-C's files are found.

    ``take``, ``sample`` and ``select`` return smaller ImageFiles without reading an image; ``info`` is
    the data set's `DatasetInfo` (classes, image shape, mean and std)."""

    root: Path
    relative: tuple[str, ...]
    labels: tuple[int, ...]
    info: DatasetInfo
    split: str = "test"
    preprocessing: str = DEFAULT_PREPROCESSING

    def __len__(self) -> int:
        return len(self.relative)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.root / self.relative[i]
        try:
            image = read_rgb(path)
        except OSError as err:
            raise DatasetNotFoundError(f"cannot read image {i} of {self.info.name}, {path}: {err}") from None
        return preprocessing(self.preprocessing)(image), self.labels[i]

    @property
    def targets(self) -> torch.Tensor:
        """All labels (int64), without reading an image."""
        return torch.as_tensor(self.labels, dtype=torch.int64)

    def take(self, n: int | None) -> ImageFiles:
        """The first ``n`` images (all of them for ``None``)."""
        return self if n is None else self.select(np.arange(min(n, len(self))))

    def sample(self, n: int | None, seed: int = 0) -> ImageFiles:
        """``n`` images drawn at random with ``seed``, kept in their order (all of them for ``None`` or ``n`` ≥ the size)."""
        return self if n is None or n >= len(self) else self.select(pick_indices(len(self), n, seed))

    def select(self, index: Any) -> ImageFiles:
        """The images at ``index`` (integer positions or a bool mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return replace(self, relative=tuple(self.relative[int(i)] for i in index), labels=tuple(self.labels[int(i)] for i in index))


def _imagenet_info(name: str, side: int) -> DatasetInfo:
    return DatasetInfo(name, imagenet_classes(), (3, side, side), *IMAGENET_STATS)


def imagenet_arg(arg: str | None) -> tuple[str | None, str]:
    """``imagenet:ARG`` → (the image list: ``robustbench``, a path or None; the preprocessing name). ARG is a
    list, a preprocessing of `PREPROCESSINGS`, or both joined by a comma."""
    listing, name = None, DEFAULT_PREPROCESSING
    for part in filter(None, (arg or "").split(",")):
        if part in PREPROCESSINGS or re.fullmatch(r"Res\d+Crop\d+", part):
            name = part
        elif listing is None:
            listing = part
        else:
            raise ValueError(
                f"imagenet:{arg}: two image lists ({listing}, {part}); give one list and at most one preprocessing, "
                "e.g. imagenet:robustbench,BicubicRes256Crop224"
            )
    _steps(name)
    return listing, name


def _listed(folder: Path, lines: Sequence[str], where: str) -> tuple[list[str], list[int]]:
    """``wnid/file`` lines → relative paths and official labels; every file must exist."""
    index = _class_index()
    relative, labels = [], []
    for n, line in enumerate(lines, start=1):
        wnid = line.split("/", 1)[0]
        if wnid not in index:
            raise ValueError(f"{where}, line {n}: {line!r} does not start with an ImageNet class folder (wnid/file.JPEG)")
        relative.append(line)
        labels.append(index[wnid])
    missing = [r for r in relative if not (folder / r).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of the {len(relative)} images of {where} are not under {folder} (the first: {missing[0]}); "
            "the list names files of ImageNet's validation folder in its class-folder layout"
        )
    return relative, labels


def robustbench_list(arg: str) -> Path:
    """``robustbench`` → the list in the installed robustbench package; anything else is a path to such a list."""
    if arg != "robustbench":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(
                f"image list {path} not found; pass imagenet:robustbench or imagenet:PATH/TO/LIST.txt "
                f"(or a preprocessing: {', '.join(PREPROCESSINGS)})"
            )
        return path
    from importlib.util import find_spec

    spec = find_spec("robustbench")
    origin = spec.origin if spec is not None else None
    path = Path(origin).parent / ROBUSTBENCH_LIST if origin else None
    if path is None or not path.is_file():
        raise DatasetNotFoundError(
            f"imagenet:robustbench reads {ROBUSTBENCH_LIST} of the robustbench package, which is not installed here"
            f"{f' (the robustbench at {Path(origin).parent} has no helper_files)' if origin else ''}: "
            "pip install robustbench (it ships the list), or pass imagenet:PATH to your copy of imagenet_test_image_ids.txt"
        )
    return path


def load_imagenet(split: str, root: Path, arg: str | None = None, **_: object) -> ImageFiles:
    """ILSVRC2012 from ``root/imagenet/val`` (test split) or ``root/imagenet/train``, in the class-folder layout;
    the test split only at the images of the list ``arg`` names (``robustbench`` or a path) when given, and the
    preprocessing ``arg`` names (`imagenet_arg`; default ``Res256Crop224``)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    listing, prep = imagenet_arg(arg)
    info = _imagenet_info("imagenet" if not arg else f"imagenet:{arg}", image_side(prep))

    folder = root / "imagenet" / ("val" if split == "test" else "train")
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"ImageNet's {'validation' if split == 'test' else 'training'} folder {folder} not found: put the "
            f"ILSVRC2012 images there as {folder}/<wnid>/<file>.JPEG (torchvision.datasets.ImageNet(root, "
            f"split={'val' if split == 'test' else 'train'!r}) sorts the official tar files into that layout; data root: root= or $ROBUSTKIT_DATA)"
        )
    if listing and split == "test":
        path = robustbench_list(listing)
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        relative, labels = _listed(folder, lines, str(path))
        return ImageFiles(folder, tuple(relative), tuple(labels), info, split, prep)
    index = _class_index()
    present = sorted(d.name for d in folder.iterdir() if d.is_dir())
    unknown = [d for d in present if d not in index]
    if unknown:
        raise ValueError(
            f"{folder} holds folders that are not ImageNet classes ({', '.join(unknown[:3])}); "
            "expected one folder per wnid (n01440764, ...), as torchvision's ImageNet writes them"
        )
    if not present:
        raise DatasetNotFoundError(
            f"{folder} has no class folders: expected {folder}/<wnid>/<file>.JPEG. The flat ILSVRC2012_img_val.tar is "
            "sorted into them by torchvision.datasets.ImageNet(root, split='val') (with the devkit beside it)"
        )
    samples = make_dataset(str(folder), {w: index[w] for w in present}, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DatasetNotFoundError(f"no images under the class folders of {folder}")
    relative = tuple(str(Path(p).relative_to(folder)) for p, _ in samples)
    return ImageFiles(folder, relative, tuple(label for _, label in samples), info, split, prep)


def load_openood(
    split: str,
    root: Path,
    arg: str | None = None,
    size: int = 224,
    sample: int | None = None,
    seed: int = 0,
    preprocessing: str | None = None,
    **_: object,
) -> ImageFiles:
    """An OpenOOD v1.5 ImageNet-1K image list, ``openood:NAME`` (``ssb_hard``, ``ninco``, ``inaturalist``,
    ``textures``, ``openimage_o``), streamed; ``sample`` of them (seeded). Preprocessed as the ID images
    (``preprocessing``, a name of `PREPROCESSINGS`, as OpenOOD applies the model's to OOD images), else at
    ``size`` 224 as ImageNet (``Res256Crop224``) and at other sizes shorter side to ``size``, centre-cropped."""
    if not arg:
        raise ValueError(f"openood needs a list name: openood:NAME, e.g. {', '.join(f'openood:{n}' for n in OPENOOD_NEAR + OPENOOD_FAR)}")
    if split != "test":
        raise ValueError(f"openood:{arg} has only a test split (OpenOOD's test_{arg}.txt); load it with split='test'")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"openood:{arg}: size={size!r} must be a positive number of pixels")
    base = root / "openood"
    listing = base / "benchmark_imglist" / "imagenet" / f"test_{arg}.txt"
    images = base / ("images_classic" if arg in OPENOOD_CLASSIC else "images_largescale")
    if not listing.is_file():
        raise DatasetNotFoundError(
            f"OpenOOD's image list {listing} not found: put OpenOOD v1.5's data folder at {base} "
            f"(benchmark_imglist/ and {images.name}/{arg}/, as OpenOOD's download script lays them out)"
        )
    rows = [line.strip("\n").split(" ", 1) for line in listing.read_text().splitlines() if line.strip()]
    bad = [r for r in rows if len(r) != 2 or not r[1].strip().lstrip("-").isdigit()]
    if bad:
        raise ValueError(f"{listing}: line {' '.join(bad[0])!r} is not 'relative/path label' (OpenOOD's image-list format)")
    keep = pick_indices(len(rows), sample, seed)
    relative = tuple(rows[i][0] for i in keep)
    missing = [r for r in relative if not (images / r).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of the {len(relative)} images of {listing.name} are not under {images} (the first: {missing[0]})"
        )
    prep = preprocessing or (DEFAULT_PREPROCESSING if size == 224 else f"Res{size}Crop{size}")
    info = DatasetInfo(f"openood:{arg}", ("ood",), (3, image_side(prep), image_side(prep)), *IMAGENET_STATS)
    labels = tuple(int(rows[i][1]) for i in keep)
    return ImageFiles(images, relative, labels, info, "test", prep)
