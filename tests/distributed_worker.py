"""One rank of tests/test_distributed.py: ``python distributed_worker.py RANK WORLD INIT_FILE MODEL OUT``."""

import json
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, TensorDataset

import robustkit as rk
from robustkit.detectors.base import Detector
from robustkit.evaluate import accuracy, ood, robust_accuracy
from robustkit.modelling.models import build_model

N = 300


class NegMaxLogit(Detector):
    """−max logit in a few lines (pytorch-ood's import alone takes seconds): one shared, one own pass."""

    name = "neg_max_logit"

    def reads(self):
        return "logits"

    def score_outputs(self, logits, features):
        return -logits.max(1).values

    def _score(self, x):
        return self.score_outputs(self._module()(x), None)


class Entropy(NegMaxLogit):
    name = "entropy"

    def reads(self):
        return None  # scored on its own, through Detector.score

    def _score(self, x):
        p = self._module()(x).softmax(1)
        return -(p * p.clamp_min(1e-12).log()).sum(1)


class Failing(Dataset):
    """Digits whose image 3 cannot be read: only rank 1 of 2 sees it."""

    def __init__(self, x, y):
        self.images, self.labels = x, y  # not .x/.y, which robustkit reads as an ImageSet's tensors

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if i == 3:
            raise ValueError("image 3 is unreadable")
        return self.images[i], self.labels[i]


class Quantise(torch.nn.Module):
    """Rounds the pixels to 5 levels (a zero gradient: the adaptive evaluation's BPDA rung)."""

    def forward(self, x):
        return torch.round(x * 4) / 4


def run(model: torch.nn.Module) -> dict:
    """Every number the test compares, computed in whatever process group is initialised."""
    test = rk.load_dataset("digits", "test")
    x, y = test.x[:N], test.y[:N]
    pgd = rk.attack("pgd", "reference", eps=0.1, steps=5)  # random start, seeded per example
    fgsm = rk.attack("fgsm", eps=0.05)
    detectors = [NegMaxLogit().fit(model), Entropy().fit(model)]
    noise = torch.rand(N // 2, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    scores = ood(detectors, x, noise, batch_size=64)
    single = ood(detectors[0], x, noise, batch_size=64)
    out = {
        "accuracy": accuracy(model, x, y, batch_size=64),
        "accuracy_dataset": accuracy(model, TensorDataset(x, y), batch_size=64),
        "accuracy_loader": accuracy(model, DataLoader(TensorDataset(x, y), batch_size=50)),
        "pgd": robust_accuracy(pgd, model, x, y, batch_size=64),
        "pgd_sequence": robust_accuracy([fgsm, pgd], model, test, batch_size=64),  # all 450, as an ImageSet
        "fgsm": robust_accuracy(fgsm, model, x, y, batch_size=64),
        "fgsm_targeted": robust_accuracy(fgsm, model, x, y, target=rk.evaluate.random_targets(y, 10), batch_size=64),
        "ood": {name: r.metrics for name, r in scores.items()},
        "ood_scores": {name: r.id_scores.tolist() + r.ood_scores.tolist() for name, r in scores.items()},
        "ood_single": single.metrics,
        # the adaptive evaluation's rungs (margin, BPDA past the rounding) run sharded on the survivors too
        "pgd_adaptive": dict(robust_accuracy(pgd, torch.nn.Sequential(Quantise(), model), x, y, batch_size=64, adaptive="auto")),
    }
    for key, data in (("failing", Failing(x, y)), ("shuffled", DataLoader(TensorDataset(x, y), shuffle=True))):
        try:
            accuracy(model, data)
        except Exception as err:
            out[key] = f"{type(err).__name__}: {err}"
    return out


def main(rank: int, world: int, init_file: str, model_path: str, out: str) -> None:
    torch.set_num_threads(1)
    saved = torch.load(model_path)
    model = build_model(saved["spec"])
    model.load_state_dict(saved["state"])
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = run(model.eval())
    finally:
        dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])
