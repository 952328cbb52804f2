"""The 15 common corruptions of Hendrycks & Dietterich 2019, at CIFAR-10-C's or ImageNet-C's severities, seeded per image.

CIFAR-10-C was made by ``make_cifar_c.py`` and ImageNet-C by ``make_imagenet_c.py``
(hendrycks/robustness, ImageNet-C/create_c); their severity constants are transcribed below
(`CIFAR10C_CONSTANTS`, `IMAGENETC_CONSTANTS`, tested against the published values) and chosen with
``constants=`` (`SETS`). The formulas follow those scripts; the building blocks come from
``corrupt-tta`` (the anti-aliased disk kernel, the clipped zoom and the six frost textures),
scikit-image, OpenCV, scipy and Pillow (extra ``corruptions``: ``pip install 'robustkit[corruptions]'``).

Where the two differ, robustkit follows the authors' scripts rather than ``corrupt-tta`` 0.1.7,
whose functions hard-code ImageNet-C's constants and depart from the paper's code in places
(its motion blur is a centred uniform line that ignores sigma, its fog ignores the fractal's
decay, its glass blur truly swaps pixels where the original copies one onto the other, its
elastic transform uses 224 where ``make_imagenet_c.py`` uses 244, and its frost draws from six
textures where the original draws from the first five).
Motion blur (also inside snow) emulates ImageMagick 6's ``MotionBlurImage`` (Q16, as the scripts
call it through Wand): a one-sided line of ``2·radius + 1`` pixels with Gaussian weights of
``sigma``, edge pixels repeated, the sum kept as a 16-bit quantum (rounded) and written to the
8-bit PNG by truncation (`imagemagick_8bit`).

Every image's corruption is drawn from its own random stream, seeded by ``(seed, corruption,
severity, index)`` where ``index`` is the image's position in the whole data set: the same seed
gives the same images for any batch size and any split over processes.

Images of any size work (elastic's constants scale with the image side as the scripts' do with
32 or 224); grey images are corrupted as three equal channels and averaged back. Frost is
skipped where its texture crop does not fit (`skipped_corruptions`).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The 15 corruptions of CIFAR-10-C and ImageNet-C, in the order of ``make_cifar_c.py``."""

SEVERITIES = (1, 2, 3, 4, 5)

# Transcribed from make_cifar_c.py (hendrycks/robustness, ImageNet-C/create_c); elastic_transform's
# entries are pixels at the script's image side (IMSIZE = 32) and scale with the image side.
CIFAR10C_CONSTANTS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": (
        (32 * 0, 32 * 0, 32 * 0.08),
        (32 * 0.05, 32 * 0.2, 32 * 0.07),
        (32 * 0.08, 32 * 0.06, 32 * 0.06),
        (32 * 0.1, 32 * 0.04, 32 * 0.05),
        (32 * 0.1, 32 * 0.03, 32 * 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}

# Transcribed from make_imagenet_c.py (same folder), written for 224×224 images; elastic_transform's
# entries are pixels at that side (the script's 244 is its own: "244 should have been 224, but
# ultimately nothing is incorrect"), and zoom_blur's are np.arange's (start, stop, step).
IMAGENETC_CONSTANTS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": (
        (244 * 2, 244 * 0.7, 244 * 0.1),
        (244 * 2, 244 * 0.08, 244 * 0.2),
        (244 * 0.05, 244 * 0.01, 244 * 0.02),
        (244 * 0.07, 244 * 0.01, 244 * 0.02),
        (244 * 0.12, 244 * 0.01, 244 * 0.02),
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
}


@dataclass(frozen=True)
class CorruptionSet:
    """One published benchmark's way of corrupting: its script, constants and the image side they were made for.

    ``frost_scale`` shrinks the frost textures (make_cifar_c.py: 0.2; make_imagenet_c.py: 1);
    ``jpeg_quality`` is the quality the published images were saved at (ImageNet-C's JPEG files: 85;
    CIFAR-10-C's .npy arrays: none), applied after the corruption so generated images match them.
    """

    name: str
    script: str
    constants: dict[str, tuple[Any, ...]]
    side: int
    frost_scale: float
    jpeg_quality: int | None

    def frost_fits(self, h: int, w: int) -> bool:
        """Whether an h×w crop fits every one of the first five frost textures at this scale (the scripts
        draw the corner with ``randint(0, side - h)``, which needs a positive range)."""
        return all(round(th * self.frost_scale) > h and round(tw * self.frost_scale) > w for th, tw in FROST_SIZES)


SETS: dict[str, CorruptionSet] = {
    "cifar10-c": CorruptionSet("CIFAR-10-C", "make_cifar_c.py", CIFAR10C_CONSTANTS, 32, 0.2, None),
    "imagenet-c": CorruptionSet("ImageNet-C", "make_imagenet_c.py", IMAGENETC_CONSTANTS, 224, 1.0, 85),
}
"""The corruption sets ``constants=`` chooses: CIFAR-10-C's (CIFAR-10 and CIFAR-100 use the same script and
constants) and ImageNet-C's."""

FROST_SIZES = ((600, 900), (315, 560), (315, 560), (350, 527), (495, 660))
"""Rows × columns of the five frost textures the scripts draw from (corrupt-tta's copies, tested)."""

FROST_MIN_SIDE = 32
INSTALL_HINT = "the corruptions need the extra 'corruptions': pip install 'robustkit[corruptions]' (corrupt-tta)"


def library_version() -> str:
    """``corrupt-tta <version>`` (raises ImportError with the install command when it is missing)."""
    try:
        import corrupt_tta
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return f"corrupt-tta {corrupt_tta.__version__}"


def corruption_set(constants: str) -> CorruptionSet:
    """The `CorruptionSet` named ``constants`` (``"cifar10-c"`` or ``"imagenet-c"``), or a clear error."""
    if constants not in SETS:
        raise ValueError(f"unknown corruption constants {constants!r}; valid: {', '.join(SETS)}")
    return SETS[constants]


def source_line(constants: str = "cifar10-c") -> str:
    """Where on-the-fly corruptions come from, for results and reports."""
    spec = corruption_set(constants)
    saved = f", saved as JPEG quality {spec.jpeg_quality} as the published files were" if spec.jpeg_quality else ""
    return (
        f"generated on the fly: {spec.script}'s formulas and {spec.name} severity constants (Hendrycks & "
        f"Dietterich 2019), built on {library_version()}; motion blur (also in snow) emulates ImageMagick's "
        f"MotionBlurImage{saved}"
    )


def check_names(corruptions: Sequence[str] | None, severities: Sequence[int] | None) -> tuple[list[str], list[int]]:
    """Validated corruption names (default: all 15) and severities (default: 1-5)."""
    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    if isinstance(corruptions, str):
        names = [corruptions]
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise ValueError(f"unknown corruption(s) {unknown or names}; valid names: {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"corruptions {names} name one twice; list each once")
    levels = list(SEVERITIES) if severities is None else list(severities)
    bad = [s for s in levels if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s not in SEVERITIES]
    if bad or not levels or len(set(levels)) != len(levels):
        raise ValueError(f"severities {levels} must be distinct integers from 1 to 5")
    return names, [int(s) for s in levels]


def skipped_corruptions(shape: Sequence[int], constants: str = "cifar10-c") -> dict[str, str]:
    """Corruptions that do not apply to images of ``shape`` (C×H×W), with the reason."""
    spec = corruption_set(constants)
    c, h, w = (int(v) for v in shape[-3:])
    if c not in (1, 3):
        reason = f"images with {c} channels: the corruptions are defined for RGB (and grey, as three equal channels)"
        return dict.fromkeys(CORRUPTIONS, reason)
    if min(h, w) < 2:
        return dict.fromkeys(CORRUPTIONS, f"{h}×{w} images: the corruptions need at least 2×2 pixels")
    skipped = {}
    if min(h, w) < FROST_MIN_SIDE:
        skipped["frost"] = (
            f"{h}×{w} images: frost blends a crop of a photographed frost texture shrunk for 32×32 images; "
            f"below {FROST_MIN_SIDE} pixels the crop holds a few texture pixels, not frost"
        )
    elif not spec.frost_fits(h, w):
        skipped["frost"] = (
            f"{h}×{w} images: frost crops {spec.script}'s frost textures (scaled by {spec.frost_scale}), and a crop "
            "this large does not fit inside them"
        )
    return skipped


def _mix(value: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit hash of a 64-bit integer."""
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 31)


def image_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """The 32-bit seed of one image's random stream: depends on nothing but these four values."""
    value = _mix(int(seed) & 0xFFFFFFFFFFFFFFFF)
    for part in (CORRUPTIONS.index(corruption), int(severity), int(index)):
        value = _mix(value ^ part)
    return value & 0xFFFFFFFF


def corrupt(
    x: torch.Tensor,
    corruption: str,
    severity: int,
    index: torch.Tensor | Sequence[int],
    seed: int = 0,
    constants: str = "cifar10-c",
) -> torch.Tensor:
    """``x`` (N×C×H×W in [0, 1]) corrupted as CIFAR-10-C (``constants="cifar10-c"``) or ImageNet-C
    (``"imagenet-c"``) was: 8-bit pixels in, 8-bit pixels out (ImageNet-C's then saved as JPEG quality 85).

    ``index`` holds each image's position in the whole data set (its random stream's seed, with
    ``seed``, ``corruption`` and ``severity``).
    """
    spec = corruption_set(constants)
    check_names([corruption], [severity])
    reason = skipped_corruptions(tuple(x.shape), constants).get(corruption)
    if reason is not None:
        raise ValueError(f"{corruption} does not apply to these images: {reason}")
    library_version()
    fn = _FUNCTIONS[corruption]
    row = spec.constants[corruption][severity - 1]
    index = [int(i) for i in index]
    if len(index) != len(x):
        raise ValueError(f"index has {len(index)} positions for {len(x)} images; pass one per image")
    pixels = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grey = pixels.shape[-1] == 1
    out = np.empty(pixels.shape[:3] + (3,), dtype=np.uint8)
    rng = np.random.RandomState()  # reseeded per image (cheap; building a RandomState is not)
    for k, (image, i) in enumerate(zip(pixels, index, strict=True)):
        rgb = np.repeat(image, 3, axis=-1) if grey else image
        rng.seed(image_seed(seed, corruption, severity, i))
        # the scripts store np.uint8(corrupted): truncation, as here
        out[k] = np.uint8(np.clip(fn(rgb, row, rng, spec), 0, 255))
        if spec.jpeg_quality is not None:
            out[k] = _jpeg_file(out[k], spec.jpeg_quality)
    result = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    if grey:
        result = result.mean(dim=1, keepdim=True)
    return result.to(x.dtype).contiguous()


# ---------------------------------------------------------------- the corruptions (x: H×W×3 uint8)


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def _shot_noise(x: np.ndarray, c: float, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def _impulse_noise(x: np.ndarray, c: float, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    from skimage.util import random_noise

    # make_cifar_c.py calls random_noise unseeded; here its generator is seeded from the image's stream
    x = random_noise(x / 255.0, mode="s&p", amount=c, rng=int(rng.randint(2**31)))
    return np.clip(x, 0, 1) * 255


def _defocus_blur(x: np.ndarray, c: tuple, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    import cv2
    from corrupt_tta.corruptions import disk

    kernel = disk(radius=c[0], alias_blur=c[1])
    channels = [cv2.filter2D(np.ascontiguousarray(x[:, :, d] / 255.0), -1, kernel) for d in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 1) * 255


def _glass_blur(x: np.ndarray, c: tuple, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    from skimage.filters import gaussian

    sigma, delta, iterations = c
    x = np.uint8(gaussian(x / 255.0, sigma=sigma, channel_axis=-1) * 255)
    h, w = x.shape[:2]
    rows = range(h - delta, delta, -1)
    cols = range(w - delta, delta, -1)
    for _ in range(iterations):
        shifts = rng.randint(-delta, delta, size=(len(rows) * len(cols), 2))  # (dx, dy) per pixel, as drawn there
        k = 0
        for r in rows:
            for col in cols:
                dx, dy = shifts[k]
                k += 1
                # make_cifar_c.py's tuple "swap" of numpy views copies the neighbour onto the pixel: kept
                x[r, col] = x[r + dy, col + dx]
    return np.clip(gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def motion_kernel(radius: float, sigma: float, angle: float) -> list[tuple[int, int, float]]:
    """ImageMagick's MotionBlurImage kernel: ``(dx, dy, weight)`` for ``2·ceil(radius) + 1`` taps
    (GetMotionBlurKernel: Gaussian of the tap index, normalised to sum 1)."""
    width = int(2 * np.ceil(radius) + 1)
    weights = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2.0 * sigma * sigma)) / (np.sqrt(2 * np.pi) * sigma)
    weights = weights / np.cumsum(weights)[-1]  # summed in tap order, as there
    px, py = width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle))
    norm = np.hypot(px, py)
    return [
        (int(np.ceil(i * py / norm - 0.5)), int(np.ceil(i * px / norm - 0.5)), float(weights[i])) for i in range(width)
    ]


def _motion(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """Motion-blur an H×W(×C) float image (edge pixels repeated beyond the border), taps summed in order."""
    taps = motion_kernel(radius, sigma, angle)
    pad = max(max(abs(dx), abs(dy)) for dx, dy, _ in taps)
    h, w = x.shape[:2]
    padded = np.pad(x, [(pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 2), mode="edge")
    out = np.zeros_like(x, dtype=np.float64)
    for dx, dy, weight in taps:
        out += weight * padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    return out


def imagemagick_8bit(pixels: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """8-bit pixels (H×W or H×W×C) motion-blurred as Wand's ``MagickMotionBlurImage`` on ImageMagick 6 Q16
    returns them through an 8-bit PNG.

    ImageMagick reads an 8-bit value v as the 16-bit quantum 257·v, sums the weighted taps in double,
    stores the sum s as a quantum rounded to the nearest (ClampToQuantum: q = ⌊s + ½⌋, clamped to
    0…65535), and the PNG writer scales it back to 8 bits by truncation (ScaleQuantumToAny without
    HDRI: ⌊255·q / 65535⌋). So a blurred value of 100.6 gives 100 (the nearest integer would be 101),
    and one of 100.999 gives 101 (q = 25957 = 257·101).
    """
    blurred = _motion(257.0 * np.asarray(pixels, dtype=np.float64), radius, sigma, angle)
    quantum = np.clip(np.floor(blurred + 0.5), 0, 65535)
    return np.floor(255.0 * quantum / 65535.0)


def _motion_blur(x: np.ndarray, c: tuple, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    return imagemagick_8bit(x, c[0], c[1], rng.uniform(-45, 45))


def _zoom_blur(x: np.ndarray, c: tuple, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    from corrupt_tta.corruptions import clipped_zoom

    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    factors = np.arange(*c)
    for zoom_factor in factors:
        out += clipped_zoom(x, zoom_factor)
    return np.clip((x + out) / (len(factors) + 1), 0, 1) * 255


def _snow(x: np.ndarray, c: tuple, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    import cv2
    from corrupt_tta.corruptions import clipped_zoom

    x = np.array(x, dtype=np.float32) / 255.0
    h, w = x.shape[:2]
    layer = rng.normal(size=(h, w), loc=c[0], scale=c[1])
    layer = clipped_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer.squeeze(-1), 0, 1) * 255).astype(np.uint8)  # the 8-bit PNG there
    layer = imagemagick_8bit(layer, c[4], c[5], rng.uniform(-135, -45)) / 255.0
    layer = layer[..., np.newaxis]
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


@functools.lru_cache(maxsize=16)
def _frost_texture(idx: int, scale: float = 0.2) -> np.ndarray:
    from importlib.resources import as_file, files

    import cv2

    name = f"frost{idx + 1}.{'png' if idx < 3 else 'jpg'}"
    with as_file(files("corrupt_tta.assets.frost").joinpath(name)) as path:
        texture = cv2.imread(str(path))
    if texture is None:
        raise FileNotFoundError(f"corrupt-tta's frost texture {name} is missing; reinstall corrupt-tta")
    return texture if scale == 1 else cv2.resize(texture, (0, 0), fx=scale, fy=scale)


def _frost(x: np.ndarray, c: tuple, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    texture = _frost_texture(int(rng.randint(5)), spec.frost_scale)  # the scripts draw from the first five textures
    h, w = x.shape[:2]
    top, left = rng.randint(0, texture.shape[0] - h), rng.randint(0, texture.shape[1] - w)
    crop = texture[top : top + h, left : left + w][..., [2, 1, 0]]
    return np.clip(c[0] * x.astype(np.float64) + c[1] * crop, 0, 255)


def plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.RandomState) -> np.ndarray:
    """The diamond-square height map of ImageNet-C's fog, in [0, 1], drawn from ``rng``."""
    maparray = np.zeros((mapsize, mapsize), dtype=np.float64)
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=0)
        squares += np.roll(squares, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squares)
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _fog(x: np.ndarray, c: tuple, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    x = x / 255.0
    h, w = x.shape[:2]
    size = 1 << max(1, int(np.ceil(np.log2(max(h, w)))))  # 32 for CIFAR and 256 for ImageNet, as there
    max_val = x.max()
    x = x + c[0] * plasma_fractal(size, c[1], rng)[:h, :w][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def _brightness(x: np.ndarray, c: float, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    x = rgb2hsv(x / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(hsv2rgb(x), 0, 1) * 255


def _contrast(x: np.ndarray, c: float, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    x = x / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def _elastic_transform(x: np.ndarray, c: tuple, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    import cv2
    from scipy.ndimage import map_coordinates
    from skimage.filters import gaussian

    h, w = x.shape[:2]
    alpha, sigma, affine = (v * (min(h, w) / spec.side) for v in c)  # the script's pixels at its side (×1.0 there)
    image = np.array(x, dtype=np.float32) / 255.0
    center = np.float32((h, w)) // 2
    size = min(h, w) // 3
    pts1 = np.float32([center + size, [center[0] + size, center[1] - size], center - size])
    pts2 = pts1 + rng.uniform(-affine, affine, size=pts1.shape).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), (w, h), borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    coords = [np.reshape(rows + dy, -1), np.reshape(cols + dx, -1)]
    channels = [map_coordinates(image[..., d], coords, order=1, mode="reflect").reshape(h, w) for d in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 1) * 255


def _pixelate(x: np.ndarray, c: float, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    from PIL import Image

    h, w = x.shape[:2]
    image = Image.fromarray(x).resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
    return np.asarray(image.resize((w, h), Image.BOX), dtype=np.float64)


def _jpeg_compression(x: np.ndarray, c: int, rng: np.random.RandomState, spec: CorruptionSet) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=c)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64)


def _jpeg_file(x: np.ndarray, quality: int) -> np.ndarray:
    """``x`` (H×W×3 uint8) through the JPEG file make_imagenet_c.py saves (``quality``, ``optimize=True``)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=quality, optimize=True)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.uint8)


_FUNCTIONS: dict[str, Callable[[np.ndarray, Any, np.random.RandomState, CorruptionSet], np.ndarray]] = {
    name: globals()[f"_{name}"] for name in CORRUPTIONS
}


# ---------------------------------------------------------------- the official files


IMAGENETC_FOLDERS = ("ImageNet-C", "imagenet-c")
"""Where ImageNet-C's extracted tar files are looked for under the data root: RobustBench's name first."""

IMAGENETC_TARS = {
    "noise.tar": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur.tar": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather.tar": ("snow", "frost", "fog", "brightness"),
    "digital.tar": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
"""The published ImageNet-C archives and the corruption folders each one extracts to."""


def official_folder(dataset: str, root: str | Any) -> Any:
    """The published corrupted images for ``dataset`` under ``root``, or None: ``CIFAR-10-C`` (cifar10) or
    ``CIFAR-100-C`` (cifar100) when it holds labels.npy; ``ImageNet-C`` or ``imagenet-c`` (imagenet) when it
    holds a corruption folder."""
    from pathlib import Path

    base = dataset.partition(":")[0]
    if root is None:
        return None
    if base == "imagenet":
        for name in IMAGENETC_FOLDERS:
            folder = Path(root) / name
            if any((folder / c).is_dir() for c in CORRUPTIONS):
                return folder
        return None
    name = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}.get(base)
    if name is None:
        return None
    folder = Path(root) / name
    return folder if (folder / "labels.npy").is_file() else None


def official_files(folder: Any, corruptions: Sequence[str], data: Any) -> OfficialFiles | ImageNetCFiles:
    """The reader for the published files in ``folder``: CIFAR-10-C's .npy arrays (``labels.npy`` there) or
    ImageNet-C's JPEG folders, found by the file names of ``data`` (a streamed ImageNet set)."""
    from pathlib import Path

    if (Path(folder) / "labels.npy").is_file():
        return OfficialFiles(folder, corruptions)
    relative = getattr(data, "relative", None)
    if relative is None:
        raise ValueError(
            f"{folder} has no labels.npy, so it is read as ImageNet-C (<corruption>/<severity>/<wnid>/<file>.JPEG), "
            "which finds each image by its file name: pass the data as load_dataset('imagenet', ...)"
        )
    return ImageNetCFiles(folder, corruptions, relative)


class ImageNetCFiles:
    """ImageNet-C's published images, ``folder/<corruption>/<severity>/<wnid>/<file>.JPEG`` (224×224 JPEG, as the
    tar files extract), read at the evaluated images' file names (``relative``: ``wnid/file.JPEG`` per image)."""

    def __init__(self, folder: Any, corruptions: Sequence[str], relative: Sequence[str]):
        from pathlib import Path

        self.folder = Path(folder)
        self.relative = relative
        missing = [c for c in corruptions if not all((self.folder / c / str(s)).is_dir() for s in SEVERITIES)]
        if missing:
            tars = sorted({t for t, names in IMAGENETC_TARS.items() for c in missing if c in names})
            raise FileNotFoundError(
                f"{self.folder} lacks the severity folders 1-5 of {', '.join(missing)}: extract ImageNet-C's "
                f"{', '.join(tars)} there (or ask for the corruptions present with corruptions=[...])"
            )

    def check_labels(self, labels: torch.Tensor, index: torch.Tensor) -> None:
        """The files are found by name (the class folder is in it), so there is nothing to match."""

    def read(self, corruption: str, severity: int, index: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.functional import to_tensor

        from .folders import read_rgb

        images = []
        for i in index.tolist():
            path = self.folder / corruption / str(severity) / self.relative[i]
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: ImageNet-C holds every validation image under each severity")
            images.append(to_tensor(read_rgb(path)))
        return torch.stack(images)


class OfficialFiles:
    """The published ``<corruption>.npy`` files (N_test·5 × 32 × 32 × 3 uint8, severity 1..5 stacked) and
    ``labels.npy`` of CIFAR-10-C / CIFAR-100-C, read row by row (memory-mapped)."""

    def __init__(self, folder: Any, corruptions: Sequence[str]):
        from pathlib import Path

        self.folder = Path(folder)
        labels_path = self.folder / "labels.npy"
        if not labels_path.is_file():
            raise FileNotFoundError(f"{labels_path} not found: the official folder holds labels.npy beside the .npy files")
        self.labels = np.load(labels_path, mmap_mode="r")
        if len(self.labels) % 5:
            raise ValueError(f"{labels_path} has {len(self.labels)} labels; the official files stack 5 severities")
        self.per_severity = len(self.labels) // 5
        self.arrays = {}
        for name in corruptions:
            path = self.folder / f"{name}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found; the official folder has one .npy per corruption")
            array = np.load(path, mmap_mode="r")
            if array.ndim != 4 or array.shape[0] != len(self.labels) or array.shape[-1] != 3 or array.dtype != np.uint8:
                raise ValueError(
                    f"{path} has shape {array.shape} ({array.dtype}); expected {len(self.labels)}×H×W×3 uint8 "
                    "(the test images at severities 1..5, stacked)"
                )
            self.arrays[name] = array

    def check_labels(self, labels: torch.Tensor, index: torch.Tensor) -> None:
        """The files must hold these images: their labels at these positions must be ``labels``."""
        if int(index.max()) >= self.per_severity:
            raise ValueError(
                f"image {int(index.max())} is past the {self.per_severity} test images of {self.folder}"
            )
        expected = torch.as_tensor(np.asarray(self.labels[index.numpy()]), dtype=torch.int64)
        if not torch.equal(expected, labels.cpu().long()):
            wrong = int((expected != labels.cpu()).sum())
            raise ValueError(
                f"{wrong} of {len(labels)} labels differ from {self.folder / 'labels.npy'} at the same positions: "
                "the official files hold the test set in its published order; pass the test split unshuffled "
                "(a prefix is fine) or generate the corruptions on the fly"
            )

    def read(self, corruption: str, severity: int, index: torch.Tensor) -> torch.Tensor:
        rows = (severity - 1) * self.per_severity + index.numpy()
        pixels = np.asarray(self.arrays[corruption][rows])
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
