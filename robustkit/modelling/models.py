"""Models: the write-ups' CNNs, a conv autoencoder, ResNet-18 for 32×32, and normalisation.

Every classifier here exposes ``features(x)`` (penultimate activations, N×D) and ``head``
(the last ``nn.Linear``), so ``model(x) == model.head(model.features(x))``. Feature-based
OOD detectors use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Normalize(nn.Module):
    """Subtract ``mean`` and divide by ``std`` per channel: the first layer of a model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NormalizedModel(nn.Module):
    """A classifier with its normalisation inside, so it takes pixel-space input."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(self.checked(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(self.checked(x))
        return self.net.features(x)

    def checked(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` itself, or a ValueError when its channels are not the normalisation's: a grey
        image would broadcast over a colour model's three means and give a meaningless number."""
        channels = self.normalize.mean.shape[1]
        if channels > 1 and (x.ndim != 4 or x.shape[1] != channels):
            shape = "×".join(map(str, x.shape[1:]))
            got = f"{x.shape[1]}-channel images ({shape})" if x.ndim == 4 else f"input of shape {tuple(x.shape)}"
            raise ValueError(
                f"the model normalises {channels}-channel images (its mean/std have {channels} values) but got {got}: "
                f"this is not the data it was made for. Pass the data set the model was trained on (on the command "
                f"line: --dataset, e.g. cifar10 for a CIFAR model) or use a model made for this data"
            )
        return x

    @property
    def head(self) -> nn.Linear:
        return self.net.head


def with_normalization(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> NormalizedModel:
    """Put ``(x - mean) / std`` in front of ``model`` so it takes `[0, 1]` pixels."""
    return NormalizedModel(model, mean, std)


class _FeatureClassifier(nn.Module):
    """A body producing features followed by a linear head."""

    body: nn.Module
    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _conv_block(c_in: int, c_out: int, convs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.ReLU(inplace=True)]
    return [*layers, nn.MaxPool2d(2)]


class SmallCNN(_FeatureClassifier):
    """Two conv layers, a max-pool and two dense layers: for 8×8 digits and 28×28 MNIST."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, width: int = 32):
        super().__init__()
        side = image_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width // 2, 3, padding=1),
            nn.ReLU(inplace=True),
            *_conv_block(width // 2, width, 1),
            nn.Flatten(),
            nn.Linear(width * side * side, 128),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(128, num_classes)


class CNN6(_FeatureClassifier):
    """The defense-matrix write-up's CNN: three blocks of two 3×3 convolutions (ReLU) with max-pooling."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: int = 32):
        super().__init__()
        w = width
        side = image_size // 8
        self.body = nn.Sequential(
            *_conv_block(in_channels, w, 2),
            *_conv_block(w, 2 * w, 2),
            *_conv_block(2 * w, 4 * w, 2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(4 * w * side * side, 256),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(256, num_classes)


class ResNet18(_FeatureClassifier):
    """torchvision's ResNet-18 adapted to 32×32 inputs (3×3 stem, no max-pool)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: int = 64):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.head = net.fc
        net.fc = nn.Identity()
        self.body = net


class ConvAutoencoder(nn.Module):
    """A convolutional autoencoder (two stride-2 stages each way, sigmoid output in [0, 1])."""

    def __init__(self, in_channels: int = 3, num_classes: int = 0, image_size: int = 32, width: int = 32):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w, in_channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ResidualDenoiser(nn.Module):
    """A residual denoising autoencoder: ``clamp(x + g(x), 0, 1)``, ``g`` a stack of 3×3
    convolutions at full resolution (no bottleneck to lose detail through).

    ``g`` starts near zero, so the untrained model is close to the identity; trained on
    noisy inputs against clean targets (``TrainConfig(noise=...)``) it learns to remove
    small perturbations while passing the image through. Meant for purification (MagNet's
    reformer is such a full-resolution denoiser), not for reconstruction-error scores.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 0, image_size: int = 32, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(3):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        last = nn.Conv2d(width, in_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.residual = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.residual(x)).clamp(0, 1)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "small_cnn": SmallCNN,
    "cnn6": CNN6,
    "resnet18": ResNet18,
    "autoencoder": ConvAutoencoder,
    "denoiser": ResidualDenoiser,
}
RECONSTRUCTORS = ("autoencoder", "denoiser")


def default_arch(shape: Sequence[int]) -> str:
    """The classifier used for a dataset of this C×H×W shape when none is named."""
    return "small_cnn" if shape[1] <= 28 else "cnn6"


def model_spec(arch: str, info: Any, width: int | None = None) -> dict[str, Any]:
    """A JSON-able description from which `build_model` rebuilds the model."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(ARCHITECTURES)}")
    c, h, w = info.shape
    if arch in ("cnn6",) and (h % 8 or w % 8):
        raise ValueError(f"cnn6 needs images whose side is a multiple of 8, got {h}×{w}; use small_cnn")
    if arch == "autoencoder" and (h % 4 or w % 4):
        raise ValueError(f"the autoencoder needs a side that is a multiple of 4, got {h}×{w}")
    spec: dict[str, Any] = {
        "arch": arch,
        "in_channels": c,
        "num_classes": info.num_classes,
        "image_size": h,
        "mean": list(info.mean),
        "std": list(info.std),
    }
    if width is not None:
        spec["width"] = width
    return spec


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Build the (untrained) model a spec describes; classifiers get their normalisation layer."""
    kwargs = {k: spec[k] for k in ("in_channels", "num_classes", "image_size", "width") if k in spec}
    net = ARCHITECTURES[spec["arch"]](**kwargs)
    model = net if spec["arch"] in RECONSTRUCTORS else with_normalization(net, spec["mean"], spec["std"])
    model.robustkit_spec = dict(spec)  # lets defenses retrain the same architecture
    return model
