"""Peak memory of evaluation over a large Dataset: it must not grow with the data set.

Each measurement runs in a fresh process and reports the growth of the peak resident set
(``ru_maxrss``) over the same process after loading the model, so the interpreter, torch
and the model cancel out. The data set is a 50,000-image CIFAR-sized ``Dataset`` whose
images are made on the fly (as a folder on disk would be read), so holding it all would
take 50,000 × 3×32×32 × 4 B = 614 MB, and its adversarial copy as much again.
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
    for row in bench_streaming():
        print(f"{row['what']:<75} {row['ratio']:.3f}  goal {row['goal']}  {'ok' if row['ok'] else 'MISSED'}")
