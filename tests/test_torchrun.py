"""robustkit under torchrun (2 Gloo processes on the CPU): the default model is trained once, --strict's exit
status, the sanity checks of `diagnose` computed once on rank 0.

Each test starts ``python -m torch.distributed.run`` in a subprocess (about 3 s of start-up per process); the
work each rank does is this file run as a script (``__main__`` below) or ``robustkit eval``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EVAL = ["--dataset", "digits", "--attack", "pgd", "--param", "steps=2", "--eps", "0.1", "--limit", "32", "--device", "cpu",
        "--no-progress", "--detector", "energy"]  # fmt: skip


def untrained_net() -> torch.nn.Module:
    """For --model: a random linear classifier of the 8×8 digits (about chance accuracy: model_learned fails)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()


def _torchrun(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Two processes under torchrun --standalone (a free port: concurrent runs on one machine cannot clash)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", **(env or {})}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_only_rank_0_trains_the_default_model_the_other_loads_it(tmp_path):
    """A cold cache: rank 0 trains and writes the one cache file, rank 1 waits and loads it (the same weights)."""
    cache = tmp_path / "cache"
    done = _torchrun([__file__, "default", str(tmp_path)], tmp_path, {"ROBUSTKIT_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["trained"] for r in ranks] == [[False], [True]]  # train_model's "cached" per call: rank 0 trained
    assert [p.name for p in cache.iterdir()] == [Path(ranks[0]["record"]["cache"]).name]
    assert ranks[0]["record"] == ranks[1]["record"] and ranks[0]["record"]["cached"] is False
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert ranks[0]["diagnosis"] == ranks[1]["diagnosis"]  # diagnose: computed on rank 0, handed to rank 1
    assert ranks[0]["diagnosis"]["measured"]["computed_on"] == "rank 0 of 2 (torch.distributed), sent to the others"


def test_strict_exit_3_on_every_rank_and_torchrun_exits_1(tmp_path):
    """--strict with a failing check (an untrained model): both ranks exit 3; torchrun itself exits 1, naming 3."""
    done = _torchrun(["-m", "robustkit", "eval", "--model", f"{__file__}:untrained_net", *EVAL, "--strict", "--out", "run"],
                     tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "--strict: " in done.stderr and "model_learned" in done.stderr
    assert done.stderr.count("exitcode  : 3") == 2, done.stderr[-3000:]  # torchrun's summary: each failed rank
    assert done.stdout.count("report: run/report.md") == 1  # rank 0 printed its summary before any rank exited
    checks = json.loads((tmp_path / "run" / "results.json").read_text())["checks"]
    assert {c["name"]: c["status"] for c in checks}["model_learned"] == "fail"


def _rank_main(out: Path) -> None:
    """One torchrun rank: the default digits model (64 training images), what train_model did, a diagnosis."""
    import torch.distributed as dist

    from robustkit.app import runner
    from robustkit.evaluate import diagnose
    from robustkit.modelling.data import load_dataset

    trained: list[bool] = []
    real = runner.train_model

    def counted(*args, **kwargs):
        model, meta = real(*args, **kwargs)
        trained.append(bool(meta["cached"]))
        return model, meta

    runner.train_model = counted
    dist.init_process_group("gloo")
    try:
        model, record = runner.default_classifier(load_dataset("digits", "train", limit=64), device="cpu", progress=False)
        test = load_dataset("digits", "test", limit=32)
        diagnosis = diagnose(model, test, attack="fgsm", eps=0.1, sample=32, skip=("gradient_free",))
        rank = dist.get_rank()
        checksum = float(sum(p.double().sum() for p in model.parameters()))
        about = {"checks": [[c.name, c.status, c.detail] for c in diagnosis.checks], "measured": diagnosis.measured}
        (out / f"rank{rank}.json").write_text(json.dumps(
            {"trained": trained, "record": record, "checksum": checksum, "diagnosis": about}, default=str
        ))  # fmt: skip
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _rank_main(Path(sys.argv[2]))
