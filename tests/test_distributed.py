"""Sharding over torch.distributed: two gloo ranks on the CPU return one process's numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robustkit.core.distributed import merge_rows, world
from robustkit.modelling.batches import indexed_batches, indexed_images

HERE = Path(__file__).resolve().parent


def test_two_gloo_ranks_give_the_numbers_of_one_process(model, tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        from distributed_worker import run
    finally:
        sys.path.remove(str(HERE))
    torch.save({"spec": model.robustkit_spec, "state": model.state_dict()}, tmp_path / "model.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    args = [str(tmp_path / "init"), str(tmp_path / "model.pt")]
    worker = [sys.executable, str(HERE / "distributed_worker.py")]
    ranks = [
        subprocess.Popen(
            [*worker, str(r), "2", *args, str(tmp_path / f"rank{r}.json")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    try:
        one = run(model)  # meanwhile, the same numbers in this process (no process group)
        for proc in ranks:
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, output[-3000:]
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    for key in ("accuracy", "accuracy_dataset", "accuracy_loader", "pgd", "pgd_sequence", "fgsm", "fgsm_targeted",
                "pgd_adaptive"):  # fmt: skip
        assert r0[key] == r1[key] == one[key], key  # exactly: integer counts summed over the ranks
    assert one["pgd"]["attacked"] == round(one["pgd"]["clean_accuracy"] * 300) and 0 < one["pgd"]["accuracy"] < 0.9
    assert one["pgd_adaptive"]["accuracy"] < one["pgd_adaptive"]["first_accuracy"]  # the rungs broke images
    for name, scores in one["ood_scores"].items():  # gathered back into data order
        assert np.allclose(r0["ood_scores"][name], scores, atol=1e-5) and r0["ood_scores"][name] == r1["ood_scores"][name]
        for metric, value in one["ood"][name].items():
            assert r0["ood"][name][metric] == r1["ood"][name][metric] == pytest.approx(value, abs=1e-6)
    assert r0["ood_single"] == r0["ood"]["neg_max_logit"] and one["ood"]["entropy"]["AUROC"] > 0.5
    # a rank that fails does not leave the other waiting: both raise, the other naming it
    assert r1["failing"] == "ValueError: image 3 is unreadable"
    assert r0["failing"] == "RuntimeError: rank 1 of 2 failed: ValueError: image 3 is unreadable"
    assert "shuffle=False" in r0["shuffled"] and "shuffle=False" in r1["shuffled"] and "shuffled" not in one


def test_shards_cover_every_example_once():
    x, y = torch.rand(11, 1, 2, 2), torch.arange(11)
    assert world() == (0, 1)
    seen = []
    for rank in range(3):
        for xb, yb, index in indexed_batches(x, y, batch_size=2, rank=rank, world=3):
            assert torch.equal(xb, x[index]) and torch.equal(yb, y[index]) and (index % 3 == rank).all()
            seen.append(index)
    assert sorted(torch.cat(seen).tolist()) == list(range(11))
    from torch.utils.data import DataLoader, TensorDataset

    for data in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=4)):
        parts = [list(indexed_images(data, batch_size=3, rank=r, world=2)) for r in range(2)]
        rows = [(torch.cat([i for _, i in p]), torch.cat([b for b, _ in p])) for p in parts]
        assert torch.equal(merge_rows(rows), x)
    with pytest.raises(ValueError, match="rank=2"):
        next(indexed_batches(x, y, rank=2, world=2))
