"""Peak memory of evaluation over a large Dataset: it must not grow with the data set.

Each measurement runs in a fresh process and reports the growth of the peak resident set
(``ru_maxrss``) over the same process after loading the model, so the interpreter, torch
and the model cancel out. The data set is a 50,000-image CIFAR-sized ``Dataset`` whose
images are made on the fly (as a folder on disk would be read), so holding it all would
take 50,000 × 3×32×32 × 4 B = 614 MB, and its adversarial copy as much again.

ImageNet rows (`bench_imagenet_streaming`): ``robustkit eval``'s library call on a randomly
initialised torchvision ResNet-18 (224-pixel input, 1000 classes) over an ImageNet folder the
benchmark writes (``ROOT/imagenet/val/<wnid>/*.JPEG``, 500×375 JPEGs in 10 classes) at two sizes N,
with FGSM at 4/255, the checks on 16 images, max-logit against streamed noise and batches of 32
(``batch_size``: memory grows with the batch, which must be below both N to show the flat line); and,
as the control, the same N images held as one tensor as RobustBench's ``load_imagenet`` holds them
(N × 3×224×224 × 4 B: 77 MB at 128 images, 308 MB at 512). Each row also gives the images per
second of the clean and robust accuracy stage.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

N, SHAPE = 50_000, (3, 32, 32)
GOAL_GB = 1.0

CHILD = """
import json, resource, sys, torch
from torch.utils.data import DataLoader, Dataset
import robustkit as rk
from robustkit.evaluate import accuracy, benchmark, robust_accuracy, ood
torch.set_num_threads(2)

class Noise(Dataset):
    def __len__(self): return {n}
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand({shape}, generator=g), i % 10

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 15 * 15, 10)).eval()
loader = DataLoader(Noise(), batch_size=500)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
what = sys.argv[1]
if what == "accuracy":
    accuracy(model, loader)
elif what == "robust_accuracy":
    robust_accuracy(rk.attack("fgsm", eps=2 / 255), model, loader, batch_size=500)
elif what == "ood":
    ood(rk.detector("max_logit").fit(model), loader, loader)
elif what == "eval":  # robustkit eval's library call: clean, FGSM, checks, one detector against a far set
    benchmark(model, loader, attack="fgsm", eps=2 / 255, detectors=["max_logit"], ood={{"far": {{"noise": loader}}}})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"grown_gb": (peak - base) / 2**20}}))
"""


def measure(what: str) -> float:
    """Peak-RSS growth in GB of one evaluation over the 50,000-image Dataset."""
    code = CHILD.format(n=N, shape=SHAPE)
    proc = subprocess.run([sys.executable, "-c", code, what], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["grown_gb"]


IMAGENET_N = (128, 512)
IMAGENET_BATCH = 32
IMAGENET_CHILD = """
BATCH = {batch}
import json, resource, sys, time, torch, torchvision
from robustkit.evaluate import benchmark
from robustkit.modelling.data import as_image_set, load_dataset
torch.set_num_threads(2)
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
root, what = sys.argv[1], sys.argv[2]
data = load_dataset("imagenet", "test", root=root)  # the file list only; no image is read yet
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if what == "eval":  # robustkit eval's library call: clean, FGSM at 4/255 (the default budget), checks, OOD
    result = benchmark(model, "imagenet", root=root, attack="fgsm", detectors=["max_logit"], ood=["far:fakedata"],
                       check_sample=16, batch_size=BATCH)
    rate = result.images_per_second
else:  # held: the N images as one tensor, as robustbench.data.load_imagenet returns them
    held = as_image_set(data)
    rate = len(held) / (time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grown_gb": (peak - base) / 2**20, "images_per_second": rate, "n": len(data)}))
"""


def write_imagenet(root, n: int, classes: int = 10) -> None:
    """``n`` JPEGs (500×375, smooth colour noise) in ``classes`` wnid folders under ``root/imagenet/val``."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from robustkit.modelling.folders import imagenet_classes

    wnids = imagenet_classes()[:: 1000 // classes][:classes]
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(n, 30, 40, 3), dtype=np.uint8)  # blown up: JPEG-friendly, not flat
    for i in range(n):
        folder = Path(root) / "imagenet" / "val" / wnids[i % classes]
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(small[i]).resize((500, 375), Image.Resampling.BICUBIC)
        image.save(folder / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)


def measure_imagenet(root, what: str) -> dict:
    code = IMAGENET_CHILD.replace("{batch}", str(IMAGENET_BATCH))
    proc = subprocess.run([sys.executable, "-c", code, str(root), what], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_imagenet_streaming(sizes: tuple[int, ...] = IMAGENET_N) -> list[dict]:
    """Peak RSS growth of ``eval`` on an ImageNet folder at each N, beside the same images held in memory."""
    import tempfile

    rows, grown = [], {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="robustkit-imagenet-") as root:
            write_imagenet(root, n)
            for what in ("eval", "held"):
                got = measure_imagenet(root, what)
                grown[what, n] = got["grown_gb"]
                label = "robustkit eval (ResNet-18, FGSM, OOD), streamed" if what == "eval" else "the same images held as one tensor"
                rows.append(
                    {
                        "what": f"imagenet N={n}: {label}: peak RSS growth (GB)",
                        "ratio": got["grown_gb"],
                        "goal": "flat in N" if what == "eval" else f"data: {n * 3 * 224 * 224 * 4 / 1e9:.2f}",
                        "ok": None,
                        "images_per_second": got["images_per_second"],
                    }
                )
    small, large = min(sizes), max(sizes)
    growth = grown["eval", large] - grown["eval", small]
    data_growth = (large - small) * 3 * 224 * 224 * 4 / 2**30
    rows.append(
        {
            "what": f"imagenet eval: peak growth from N={small} to N={large} (GB)",
            "ratio": growth,
            "goal": f"< 0.25 × the data's {data_growth:.2f}",
            "ok": growth < 0.25 * data_growth,
        }
    )
    return rows


def bench_streaming() -> list[dict]:
    """One row per evaluation: peak memory growth over a 50,000-image CIFAR-sized Dataset."""
    rows = []
    for what in ("accuracy", "robust_accuracy", "ood", "eval"):
        grown = measure(what)
        rows.append(
            {
                "what": f"{what} over a {N:,}-image 3×32×32 Dataset: peak RSS growth (GB)",
                "ratio": grown,
                "goal": f"<= {GOAL_GB} (the data alone: {N * 3 * 32 * 32 * 4 / 1e9:.2f})",
                "ok": grown <= GOAL_GB,
            }
        )
    return rows


if __name__ == "__main__":
    assert resource  # measured in the child
    imagenet_only = "--imagenet" in sys.argv
    for row in (bench_imagenet_streaming() if imagenet_only else bench_streaming() + bench_imagenet_streaming()):
        mark = "" if row["ok"] is None else ("ok" if row["ok"] else "MISSED")
        rate = f"  {row['images_per_second']:.1f} images/s" if "images_per_second" in row else ""
        print(f"{row['what']:<90} {row['ratio']:.3f}  goal {row['goal']}  {mark}{rate}")
