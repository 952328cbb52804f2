"""robustkit eval's attack against ``robustbench.eval.benchmark`` on the same model, images and AutoAttack (issue 31).

Time (goal ≤ 1.05×): a RobustBench zoo architecture (RobustBench's own WideResNet class at depth 10, width 1,
untrained, its logits centred so that its predictions follow the image), registered in RobustBench's zoo table
with its checkpoint in RobustBench's layout, on ``n`` CIFAR-10 images in the official python layout (random
pixels; labels: the model's predictions, every fourth moved to another class, so three quarters are attacked).
Both sides run what RobustBench's leaderboard runs: AutoAttack standard at L∞ 8/255, seed 0, batches of 32
(``benchmark``'s default). Ours is robustkit eval's attack part: ``load_dataset`` and ``robust_accuracy`` of the
default threat model; theirs is ``robustbench.eval.benchmark`` (it loads the images, takes the clean accuracy,
runs ``run_standard_evaluation`` and the accuracy of its output). The model is loaded once per side, outside the
timing. One torch thread; the two alternate ``repeats`` times after a warm-up, and the row gives the median of
the per-pair CPU-time ratios (the wall ratio beside it).

Memory: each side in a fresh process at two ``N`` (1 000 and 10 000 images of a full-size official
test_batch), the growth of the peak resident set over the process's resident set after its imports and the
model (Linux: the peak, VmHWM, is reset there through /proc/self/clear_refs, so earlier peaks stay out): RobustBench holds the N images in one tensor and its adversarial copy in another; robustkit reads
the test file, keeps the N images and streams the attack in batches. A linear classifier on 4×4-pooled pixels
stands in for the network (memory does not depend on it) and ε = 0.5 L∞ breaks every image in APGD-CE, so the
10 000-image runs take seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

NAME = "Bench2025WRN10"


def write_cifar10(root: Path, images: np.ndarray, labels: list[int]) -> None:
    """CIFAR-10's official python files (cifar-10-batches-py) with ``images`` (N×3072 uint8) as test_batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": images[:2], "labels": labels[:2]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": images, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def register(name: str, build) -> None:
    """Put ``build`` in RobustBench's CIFAR-10 L∞ zoo table under ``name`` (this process only)."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][name] = {"model": build, "gdrive_id": "none"}


def offline_cifar() -> None:
    """torchvision (RobustBench's CIFAR-10 reader) checks the official files' md5 sums: these are stand-ins."""
    import torchvision.datasets.cifar as cifar

    cifar.check_integrity = lambda path, md5=None: os.path.isfile(path)


def tiny_wrn() -> torch.nn.Module:
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    return WideResNet(depth=10, widen_factor=1)


def setup_time(folder: Path, n: int) -> torch.nn.Module:
    """The zoo entry's checkpoint and ``n`` test images (see the module docstring); returns the network."""
    torch.manual_seed(0)
    net = tiny_wrn().eval()
    images = np.random.default_rng(0).integers(0, 256, (n, 3072), dtype=np.uint8)
    x = torch.from_numpy(images).float().div(255).view(-1, 3, 32, 32)
    with torch.no_grad():
        features: list[torch.Tensor] = []
        hook = net.fc.register_forward_hook(lambda m, inputs, out: features.append(inputs[0]))
        net(x)
        hook.remove()
        net.fc.bias -= net.fc.weight @ features[0].mean(0)
        labels = net(x).argmax(1)
    labels[::4] = (labels[::4] + 1) % 10
    write_cifar10(folder / "data", images, labels.tolist())
    path = folder / "models" / "cifar10" / "Linf" / f"{NAME}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": net.state_dict()}, path)
    return net


def bench_robustbench(repeats: int = 3, n: int = 64) -> list[dict]:
    """The time row and the two memory rows (see the module docstring)."""
    import robustkit as rk
    from benchmarks.bench import _pair_ratios
    from robustkit.evaluate.benchmark import threat_model
    from robustkit.modelling.zoo import import_robustbench

    rb = import_robustbench()
    import robustbench.eval

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    acc: dict[str, tuple[float, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            setup_time(folder, n)
            register(NAME, tiny_wrn)
            offline_cifar()
            seeded = robustbench.eval.AutoAttack

            def their_autoattack(*args, **kwargs):
                return seeded(*args, **{**kwargs, "seed": 0, "verbose": False})

            robustbench.eval.AutoAttack = their_autoattack
            ours_model = rk.load_model(f"robustbench:{NAME}", model_dir=folder / "models", device="cpu")
            their_model = rb.utils.load_model(NAME, model_dir=str(folder / "models"), dataset="cifar10", threat_model="Linf")
            attack = threat_model(eps=8 / 255, seed=0)

            def ours() -> None:
                data = rk.load_dataset("cifar10", "test", root=folder / "data", limit=n)
                result = rk.evaluate.robust_accuracy(attack, ours_model, data, batch_size=32)
                acc["ours"] = (result["clean_accuracy"], result["accuracy"])

            def theirs() -> None:
                with contextlib.redirect_stdout(io.StringIO()):
                    acc["theirs"] = robustbench.eval.benchmark(
                        their_model, n_examples=n, dataset="cifar10", threat_model="Linf",
                        data_dir=str(folder / "data"), eps=8 / 255, batch_size=32,
                    )  # fmt: skip

            timed = _pair_ratios(ours, theirs, repeats)
            robustbench.eval.AutoAttack = seeded
    finally:
        torch.set_num_threads(threads)
    same = acc["ours"] == tuple(acc["theirs"])
    rows = [
        {
            "what": f"eval attack / robustbench.eval.benchmark, AutoAttack standard L∞ 8/255, {n} CIFAR-size images, "
            f"WRN-10-1, CPU time ({timed['ours_s']:.1f} s / {timed['raw_s']:.1f} s wall, {timed['wall']:.2f}x; "
            f"clean, robust {acc['ours'][0]:.3f}, {acc['ours'][1]:.3f} / {acc['theirs'][0]:.3f}, {acc['theirs'][1]:.3f})",
            "ratio": timed["cpu"],
            "wall_ratio": timed["wall"],
            "goal": "<= 1.05 (issue 31), same acc",
            "ok": timed["cpu"] <= 1.05 and same,
        }
    ]
    grown = {(side, m): memory(side, m) for side in ("robustkit", "robustbench") for m in MEMORY_N}
    for side in ("robustkit", "robustbench"):
        small, large = (grown[side, m] for m in MEMORY_N)
        rows.append(
            {
                "what": f"{side}: peak RSS growth (MB) at {MEMORY_N[0]:,} / {MEMORY_N[1]:,} images "
                f"({small:.0f} / {large:.0f}; the images alone {MEMORY_N[1] * 3072 * 4 / 2**20:.0f} MB at {MEMORY_N[1]:,})",
                "ratio": large,
                "goal": "–",
                "ok": None,
            }
        )
    return rows


MEMORY_N = (1_000, 10_000)

CHILD = """
import contextlib, gc, io, json, sys
from pathlib import Path
import torch
sys.path.insert(0, {repo!r})
from benchmarks.robustbench import offline_cifar, register
import robustkit as rk
from robustkit.evaluate.benchmark import threat_model
from robustkit.modelling.zoo import import_robustbench
rb = import_robustbench()
import robustbench.eval
torch.set_num_threads(1)
side, n, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

def linear():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(192, 10))

register("Linear", linear)
offline_cifar()
seeded = robustbench.eval.AutoAttack
robustbench.eval.AutoAttack = lambda *a, **k: seeded(*a, **{{**k, "seed": 0, "verbose": False}})
if side == "robustkit":
    model = rk.load_model("robustbench:Linear", model_dir=folder / "models", device="cpu")
else:
    model = rb.utils.load_model("Linear", model_dir=str(folder / "models"), dataset="cifar10", threat_model="Linf")
def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) / 1024

gc.collect()
with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current resident set
    f.write("5")
base = status("VmRSS")
if side == "robustkit":
    data = rk.load_dataset("cifar10", "test", root=folder / "data", limit=n)
    result = rk.evaluate.robust_accuracy(threat_model(eps=0.5, seed=0), model, data, batch_size=32)
    acc = result["accuracy"]
else:
    with contextlib.redirect_stdout(io.StringIO()):
        acc = robustbench.eval.benchmark(model, n_examples=n, dataset="cifar10", threat_model="Linf",
                                         data_dir=str(folder / "data"), eps=0.5, batch_size=32)[1]
print(json.dumps({{"grown_mb": status("VmHWM") - base, "robust": acc}}))
"""

_MEMORY_FOLDER: dict[str, Path] = {}


def _memory_folder() -> Path:
    """A full-size official test_batch (10 000 random images, random labels) and the linear entry's checkpoint."""
    if "path" not in _MEMORY_FOLDER:
        folder = Path(tempfile.mkdtemp(prefix="robustkit-bench-rb-"))
        rng = np.random.default_rng(0)
        write_cifar10(folder / "data", rng.integers(0, 256, (10_000, 3072), dtype=np.uint8), rng.integers(0, 10, 10_000).tolist())
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(192, 10))
        path = folder / "models" / "cifar10" / "Linf" / "Linear.pt"
        path.parent.mkdir(parents=True)
        torch.save(net.state_dict(), path)
        _MEMORY_FOLDER["path"] = folder
    return _MEMORY_FOLDER["path"]


def memory(side: str, n: int) -> float:
    """Peak-RSS growth in MB of one side's evaluation of ``n`` images, in a fresh process."""
    repo = str(Path(__file__).resolve().parents[1])
    code = CHILD.format(repo=repo)
    proc = subprocess.run(
        [sys.executable, "-c", code, side, str(n), str(_memory_folder())], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])["grown_mb"]


if __name__ == "__main__":
    for row in bench_robustbench():
        print(f"{row['what']:<75} {row['ratio']:.3f}  goal {row['goal']}  {row.get('wall_ratio', '')}")
