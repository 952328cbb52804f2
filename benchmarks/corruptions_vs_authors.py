"""robustkit's corruptions beside the authors' scripts, run unedited on the same images and random draws.

``python -m benchmarks.corruptions_vs_authors --cifar-script make_cifar_c.py --imagenet-script make_imagenet_c.py``
(the two files of hendrycks/robustness, ImageNet-C/create_c, as published; get them from GitHub)
loads each script's helpers and corruptions (everything above its ``End Distortions`` line: below it
the scripts read their data sets and write files) and calls them next to `robustkit.modelling.corruptions`
on the same images, every corruption at every severity, with numpy's global random state seeded with the
seed robustkit draws that image's corruption from. It prints, per corruption, how many images came out
bit-identical and the largest difference in grey levels.

Needs what the scripts import: Wand and ImageMagick 6 (``apt-get install libmagickwand-6.q16-6``,
``pip install Wand``), plus robustkit's ``corruptions`` extra. The scripts were written for older
libraries; these shims run them unchanged on today's:

- ``np.float_`` (gone in numpy 2) is ``np.float64``; ``np.fromstring(bytes, uint8)`` (its binary mode is gone)
  is ``np.frombuffer``;
- scikit-image's ``gaussian(..., multichannel=True)`` is ``gaussian(..., channel_axis=-1)``;
- ``skimage.util.random_noise`` without a seed (impulse noise) gets one drawn from numpy's global state,
  as robustkit draws its seed from the image's random stream;
- the scripts read ``./frost1.png`` … from the working folder: it is corrupt-tta's folder of the textures.

CIFAR images: the first ``--images`` test images under ``--root`` (``cifar-10-batches-py``), else
scikit-image's sample photographs shrunk to 32×32. ImageNet images: scikit-image's sample photographs
through torchvision's Resize(256) and CenterCrop(224), as make_imagenet_c.py reads ImageNet, and the
authors' output through the JPEG file (quality 85) that script saves.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

END = "# /////////////// End Distortions ///////////////"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel", "retina")


@contextlib.contextmanager
def shims() -> Iterator[None]:
    """Today's numpy and scikit-image behaving as the scripts expect (see the module's docstring)."""
    import skimage.filters
    import skimage.util

    saved = (getattr(np, "float_", None), np.fromstring, skimage.filters.gaussian, skimage.util.random_noise)
    gaussian, random_noise = skimage.filters.gaussian, skimage.util.random_noise

    def old_gaussian(image, sigma=1, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kwargs)

    def seeded_noise(image, mode="gaussian", rng=None, **kwargs):
        return random_noise(image, mode=mode, rng=int(np.random.randint(2**31)) if rng is None else rng, **kwargs)

    np.float_ = np.float64
    np.fromstring = lambda data, dtype=float: np.frombuffer(data, dtype)
    skimage.filters.gaussian, skimage.util.random_noise = old_gaussian, seeded_noise
    try:
        yield
    finally:
        if saved[0] is None:
            del np.float_
        else:
            np.float_ = saved[0]
        np.fromstring, skimage.filters.gaussian, skimage.util.random_noise = saved[1:]


def load_script(path: Path) -> types.ModuleType:
    """The script's helpers and corruptions, executed as published (call it inside `shims`)."""
    source = path.read_text()
    if END not in source:
        raise ValueError(f"{path} has no line {END!r}: is it make_cifar_c.py or make_imagenet_c.py?")
    module = types.ModuleType(path.stem)
    exec(compile(source.split(END)[0], str(path), "exec"), module.__dict__)  # the authors' code, on purpose
    return module


@contextlib.contextmanager
def frost_folder() -> Iterator[None]:
    """The working folder holding frost1.png … frost6.jpg (corrupt-tta's copies), as the scripts expect."""
    from importlib.resources import as_file, files

    with as_file(files("corrupt_tta.assets.frost").joinpath("frost1.png")) as first:
        before = os.getcwd()
        os.chdir(Path(first).parent)
        try:
            yield
        finally:
            os.chdir(before)


def photos(side: int | None, count: int) -> list[np.ndarray]:
    """scikit-image's sample photographs (offline) as H×W×3 uint8: through Resize(256) + CenterCrop(224) for
    ImageNet (``side`` None), or shrunk to side×side."""
    import skimage.data
    from PIL import Image
    from torchvision import transforms

    out = []
    for name in PHOTOS[:count]:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        if side is None:
            image = transforms.CenterCrop(224)(transforms.Resize(256)(image))
        else:
            image = image.resize((side, side), Image.Resampling.BICUBIC)
        out.append(np.asarray(image))
    return out


def cifar_images(root: Path | None, count: int) -> list[np.ndarray]:
    """The first ``count`` CIFAR-10 test images under ``root``, else photographs at 32×32."""
    if root is None:
        return photos(32, min(count, len(PHOTOS)))
    from robustkit.modelling.data import load_dataset

    test = load_dataset("cifar10", "test", root=root, limit=count)
    return list((test.x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def compare(module: types.ModuleType, images: list[np.ndarray], constants: str, seed: int = 0) -> list[dict]:
    """Per corruption: images bit-identical, share of differing values and the largest difference."""
    from PIL import Image

    from robustkit.modelling import corruptions as gen

    spec = gen.corruption_set(constants)
    rows = []
    for name in gen.CORRUPTIONS:
        theirs_fn: Callable = getattr(module, name)
        same = total = values = differing = 0
        worst = 0
        for severity in gen.SEVERITIES:
            for i, image in enumerate(images):
                np.random.seed(gen.image_seed(seed, name, severity, i))
                theirs = np.uint8(theirs_fn(Image.fromarray(image), severity))
                if spec.jpeg_quality is not None:  # make_imagenet_c.py saves each corrupted image as a JPEG file
                    buffer = io.BytesIO()
                    Image.fromarray(theirs).save(buffer, "JPEG", quality=spec.jpeg_quality, optimize=True)
                    theirs = np.asarray(Image.open(buffer).convert("RGB"))
                x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
                ours = (gen.corrupt(x, name, severity, [i], seed, constants)[0] * 255).round().to(torch.uint8)
                ours = ours.permute(1, 2, 0).numpy()
                diff = np.abs(ours.astype(int) - theirs.astype(int))
                same += int(diff.max() == 0)
                total += 1
                values += diff.size
                differing += int((diff > 0).sum())
                worst = max(worst, int(diff.max()))
        rows.append({"corruption": name, "identical": same, "images": total, "differing": differing / values, "max": worst})
    return rows


def show(title: str, rows: list[dict]) -> None:
    identical = sum(r["identical"] == r["images"] for r in rows)
    print(f"\n{title}: {identical} of {len(rows)} corruptions bit-identical on every image and severity")
    print(f"{'corruption':<18} {'identical images':>17} {'values differing':>17} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['corruption']:<18} {r['identical']:>8} of {r['images']:<6} {r['differing']:>16.2%} {r['max']:>11}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-script", type=Path, help="make_cifar_c.py as published")
    parser.add_argument("--imagenet-script", type=Path, help="make_imagenet_c.py as published")
    parser.add_argument("--root", type=Path, help="a data root holding cifar-10-batches-py (else photographs at 32×32)")
    parser.add_argument("--images", type=int, default=20, help="CIFAR images (ImageNet: up to 8 photographs)")
    parser.add_argument("--imagenet-images", type=int, default=4, help="ImageNet-size photographs (at most 8)")
    args = parser.parse_args(argv)
    if args.cifar_script is None and args.imagenet_script is None:
        parser.error("give --cifar-script, --imagenet-script or both")
    import wand.version

    scripts = {k: None if v is None else v.resolve() for k, v in (("cifar", args.cifar_script), ("imagenet", args.imagenet_script))}
    root = None if args.root is None else args.root.resolve()  # before the working folder changes
    print(f"{wand.version.MAGICK_VERSION}; Wand {wand.version.VERSION}")
    with shims(), frost_folder():
        if scripts["cifar"] is not None:
            start = time.perf_counter()
            rows = compare(load_script(scripts["cifar"]), cifar_images(root, args.images), "cifar10-c")
            show(f"make_cifar_c.py vs robustkit (cifar10-c), {time.perf_counter() - start:.0f} s", rows)
        if scripts["imagenet"] is not None:
            start = time.perf_counter()
            images = photos(None, min(args.imagenet_images, len(PHOTOS)))
            rows = compare(load_script(scripts["imagenet"]), images, "imagenet-c")
            show(f"make_imagenet_c.py vs robustkit (imagenet-c), {time.perf_counter() - start:.0f} s", rows)


if __name__ == "__main__":
    main()
