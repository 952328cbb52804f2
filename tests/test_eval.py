"""robustkit eval and robustkit.evaluate.benchmark: clean, robust and OOD numbers in one report.

The model is a random-feature network whose head is fitted in closed form (ridge regression on
digits), so no test waits for training; the attacks are PGD with 3 steps and FGSM.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustkit.app.cli import main
from robustkit.app.evaluation import ModelInfo, report_lines
from robustkit.evaluate import accuracy, benchmark, ood_sets, threat_model
from robustkit.modelling.data import DatasetInfo, ImageSet, load_dataset

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--dataset", "digits", "--attack", "pgd", "--param", "steps=3", "--eps", "0.1", "--limit", "64", "--device", "cpu",
        "--no-progress"]  # fmt: skip
CHEAP = [*BASE, "--detector", "energy", "--detector", "mahalanobis"]


def untrained_net() -> torch.nn.Module:
    """The architecture (for --model): fixed random ReLU features of the 8×8 image, a linear head."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 10)).eval()


def trained_net() -> torch.nn.Module:
    """`untrained_net` with its head fitted by ridge regression on one-hot digits labels (about 95%)."""
    net, train = untrained_net(), load_dataset("digits", "train")
    with torch.no_grad():
        h = torch.cat([net[:3](train.x), torch.ones(len(train), 1)], 1).double()
        target = torch.nn.functional.one_hot(train.y, 10).double()
        w = torch.linalg.solve(h.T @ h + 1e-2 * torch.eye(h.shape[1], dtype=torch.float64), h.T @ target)
        net[3].weight.copy_(w[:-1].T.float())
        net[3].bias.copy_(w[-1].float())
    return net


@pytest.fixture(scope="module")
def net():
    return trained_net()


@pytest.fixture(scope="module")
def weights(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "net.pt"
    torch.save(net.state_dict(), path)
    return path


def _folder_of_colour_images(path: Path, n: int = 12) -> Path:
    (path / "shapes").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path / "shapes" / f"{i}.png")
    return path


def test_benchmark_numbers_are_consistent(net, tmp_path):
    folder = _folder_of_colour_images(tmp_path / "near")
    result = benchmark(
        net, "digits", attack="pgd", eps=0.1, attack_params={"steps": 3}, detectors=["energy", "mahalanobis"],
        ood=["fakedata", f"near:imagefolder:{folder}"], limit=80, seed=1,
    )  # fmt: skip
    test = load_dataset("digits", "test", limit=80)
    assert result.n == 80 and result.clean_accuracy == accuracy(net, test.x, test.y) > 0.85
    assert 0 < result.robust_accuracy <= result.clean_accuracy
    assert result.attack["name"] == "pgd" and result.attack["eps"] == 0.1 and result.attack["seed"] == 1
    pairs = {(r["group"], r["set"], r["detector"]) for r in result.ood}
    sets = [("far", "fakedata"), ("near", f"imagefolder:{folder}")]
    assert pairs == {(g, s, d) for g, s in sets for d in ("energy", "mahalanobis")} and len(result.ood) == 4
    assert all(0 <= r["metrics"]["AUROC"] <= 1 and 0 <= r["metrics"]["FPR95TPR"] <= 1 for r in result.ood)
    assert {s["name"]: s["n"] for s in result.ood_sets} == {"fakedata": 80, f"imagefolder:{folder}": 12}
    means = result.means()
    assert means["far"]["energy"]["AUROC"] == next(r["metrics"]["AUROC"] for r in result.ood if r["set"] == "fakedata" and r["detector"] == "energy")
    assert result.scores["fakedata"]["mahalanobis"][1].shape == (80,)  # the 12×12 colour images became 1×8×8
    names = [c.name for c in result.checks]
    model_checks = ["output_head", "model_learned", "budget_units", "input_scale", "label_order", "gradients_available",
                    "gradient_consistency", "unstable_predictions", "forward_optimisation", "unbounded_attack",
                    "iterative_vs_single_step"]  # fmt: skip
    assert names[: len(model_checks)] == model_checks
    assert "ood_auroc (energy, fakedata)" in names and "ood_saturated (mahalanobis, fakedata)" in names
    assert {c.status for c in result.checks[: len(model_checks)]} == {"pass"}
    record = json.loads(json.dumps(result.as_dict()))
    assert record["robust_accuracy"] == result.robust_accuracy and record["ood_means"]["near"]["mahalanobis"]
    assert "RobustBench" in record["papers"] and "OpenOOD" in record["papers"]


def test_threat_model_and_ood_set_defaults_and_refusals():
    default = threat_model()
    assert (default.name, default.eps, default.params["version"], default.seed) == ("autoattack", 8 / 255, "standard", 0)
    assert default.backend == "autoattack"  # the authors' code, not torchattacks' 10-iteration copy
    l2 = threat_model(norm="l2", seed=4)
    assert (l2.name, l2.backend, l2.eps, l2.seed) == ("autoattack_l2", "autoattack", 0.5, 4)
    l1 = threat_model(norm="l1")
    assert (l1.name, l1.eps, l1.params["version"]) == ("autoattack_l1", 12.0, "standard")
    assert threat_model("pgd", eps="4/255", params={"steps": 7}).params["steps"] == 7
    for kwargs, match in [
        ({"attack": "pgd", "norm": "l2"}, "--attack autoattack_l2"),
        ({"attack": "deepfool"}, "unbounded"),
        ({"eps": 2}, r"8/255, not 8"),
        ({"norm": "l3"}, "valid: linf, l2, l1"),
        ({"eps": 0.1, "params": {"eps": 0.2}}, "give it once"),
    ]:
        with pytest.raises(ValueError, match=match):
            threat_model(**kwargs)
    cifar = ood_sets("cifar10")
    assert [(s.name, s.group) for s in cifar] == [
        ("cifar100", "near"), ("tinyimagenet", "near"), ("mnist", "far"), ("svhn", "far"), ("textures", "far"), ("places365", "far")
    ]  # fmt: skip
    assert all(s.default for s in cifar) and [(s.name, s.group) for s in ood_sets("digits")] == [("fakedata", "far")]
    assert [(s.name, s.group) for s in ood_sets("cifar10", ["svhn", "near:imagefolder:x"])] == [("svhn", "far"), ("imagefolder:x", "near")]
    for names, match in [(["mnist"], "--ood near:mnist or --ood far:mnist"), (["nope"], "unknown OOD set"),
                         (["digits"], "ID data set itself"), (["fakedata", "far:fakedata"], "given twice")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            ood_sets("digits", names)


def test_missing_default_ood_sets_are_skipped_with_a_note_and_fakedata_stands_in(tmp_path):
    """A CIFAR-10-shaped ID set with none of OpenOOD's sets on disk: each is named with how to get it."""
    info = DatasetInfo("cifar10", tuple(str(i) for i in range(10)), (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    x = load_dataset("fakedata", shape=(3, 32, 32), size=20, seed=9).x
    data = ImageSet(x, torch.arange(20) % 10, info)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    result = benchmark(net, data, attack="fgsm", eps="2/255", detectors=["energy"], root=tmp_path, limit=50)
    assert set(result.skipped) == {"cifar100", "tinyimagenet", "mnist", "svhn", "textures", "places365", "(far fallback)"}
    assert all("--download" in why for name, why in result.skipped.items() if name != "(far fallback)")
    assert [(s["name"], s["group"], s["n"]) for s in result.ood_sets] == [("fakedata", "far", 20)] and len(result.ood) == 1
    # every label of the group names the stand-in: the report's tables and headings, the figure, results.json
    far = ["mnist", "svhn", "textures", "places365"]
    assert result.group_label("far") == "far (fakedata stand-in)" and result.ood_sets[0]["stands_in_for"] == far
    assert list(result.as_dict()["ood_means"]) == ["far (fakedata stand-in)"] and result.ood[0]["stands_in_for"] == far
    report = "\n".join(report_lines(result, ModelInfo("net", {}), "cpu"))
    assert "| far (fakedata stand-in) AUROC |" in report and "far AUROC" not in report
    assert "### Far OOD: fakedata, standing in for mnist, svhn, textures, places365" in report
    assert "not how they do on far OOD data" in report
    assert not any(tmp_path.iterdir())  # nothing downloaded or created
    with pytest.raises(FileNotFoundError, match="--download"):  # a set asked for by name must be there
        benchmark(net, data, attack="fgsm", detectors=["energy"], root=tmp_path, limit=20, ood=["svhn"])
    with pytest.raises(ValueError, match="train="):  # a fitted detector needs training data for an ImageSet
        benchmark(net, data, attack="fgsm", detectors=["mahalanobis"], ood=["fakedata"])


def _numbers(results):
    return (results["clean_accuracy"], results["robust_accuracy"], [r["metrics"] for r in results["ood"]])


def test_cli_writes_the_run_folder_and_the_same_seed_gives_the_same_numbers(tmp_path, monkeypatch, capsys, weights):
    monkeypatch.chdir(tmp_path)
    model = ["--model", f"{__file__}:untrained_net", "--weights", str(weights)]
    for out in ("a", "b"):
        main(["eval", *model, *CHEAP, "--seed", "3", "--out", out])
    printed = capsys.readouterr().out
    assert "report: a/report.md" in printed and "far AUROC" in printed
    first, second = (json.loads((tmp_path / out / "results.json").read_text()) for out in ("a", "b"))
    assert _numbers(first) == _numbers(second)
    assert first["robust_accuracy"] <= first["clean_accuracy"] == accuracy(trained_net(), *_first(64))
    assert first["model"] == {"model": f"{__file__}:untrained_net", "weights": str(weights)}
    assert first["options"]["seed"] == 3 and first["attack"]["seed"] == 3 and first["n"] == 64
    assert first["run"]["versions"]["torch"] == torch.__version__.split("+")[0] and first["run"]["versions"]["robustkit"]
    assert {"ood_auroc.png", "hist_fakedata.png"} == set(first["run"]["figures"])
    assert all((tmp_path / "a" / f).stat().st_size > 1000 for f in first["run"]["figures"])
    report = (tmp_path / "a" / "report.md").read_text()
    order = [report.index(h) for h in ("## Sanity checks", "## Accuracy", "## OOD detection", "### Far OOD: fakedata", "## Figures")]
    assert order == sorted(order) and "| energy |" in report and "![ood_auroc.png](ood_auroc.png)" in report
    main(["eval", *model, *CHEAP, "--seed", "4", "--out", "a", "--overwrite"])  # another seed: another noise set
    assert _numbers(json.loads((tmp_path / "a" / "results.json").read_text()))[2] != _numbers(first)[2]


def test_an_interrupted_eval_resumes_with_resume(tmp_path, monkeypatch, capsys, weights):
    """Ctrl-C during the attack leaves the attack's state in the run folder and no report; --resume
    reads the finished batches back and ends with the numbers of an uninterrupted run."""
    from robustkit.attacks.reference import PGD

    monkeypatch.chdir(tmp_path)
    args = ["--model", f"{__file__}:untrained_net", "--weights", str(weights), *CHEAP, "--limit", "300"]  # 2 attack batches
    main(["eval", *args, "--out", "whole"])
    attack, calls = PGD.__call__, []

    def interrupted(self, *a, **k):  # Ctrl-C while the second batch is attacked
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return attack(self, *a, **k)

    def exit_130(args):  # the CLI's Ctrl-C exit, without os._exit (which would end pytest too)
        raise SystemExit(130)

    with monkeypatch.context() as patch:
        patch.setattr(PGD, "__call__", interrupted)
        patch.setattr("robustkit.app.cli._interrupted", exit_130)
        with pytest.raises(SystemExit) as stopped:
            main(["eval", *args, "--out", "cut"])
    assert stopped.value.code == 130
    capsys.readouterr()
    assert [p.name for p in (tmp_path / "cut").iterdir()] == ["attack-state.jsonl"]
    with pytest.raises(SystemExit) as refused:  # the folder is not silently reused or replaced
        main(["eval", *args, "--out", "cut"])
    assert refused.value.code == 2 and "pass --resume to continue it" in capsys.readouterr().err
    main(["eval", *args, "--out", "cut", "--resume"])
    said = capsys.readouterr().err  # at the start of the attack, then per attack
    assert "resuming from cut/attack-state.jsonl: 256 image attacks in 1 batch will be read back" in said
    assert re.search(r"attack pgd \(reference\): \d+ images attacked in \S+ s, \d+ still robust, 256 read back", said)
    whole, cut = (json.loads((tmp_path / out / "results.json").read_text()) for out in ("whole", "cut"))
    assert _numbers(cut) == _numbers(whole) and cut["attack"]["resumed"] == 256 and whole["attack"]["resumed"] == 0
    assert "resumed an interrupted one: 256 image attacks" in (tmp_path / "cut" / "report.md").read_text()
    assert not list((tmp_path / "cut").glob("attack-state*"))
    for out in ("cut", "whole", "new"):  # finished, finished, never started
        with pytest.raises(SystemExit) as done:
            main(["eval", *args, "--out", out, "--resume"])
        assert done.value.code == 2 and "nothing to resume" in capsys.readouterr().err


def test_the_cli_table_names_the_far_stand_in(tmp_path, monkeypatch, capsys, weights):
    """A data set whose default far sets are all missing: the CLI's table and the report say fakedata stood in."""
    from robustkit.evaluate.benchmark import OOD_SETS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(OOD_SETS, "digits", {"near": (), "far": ("svhn",)})  # not under --root: skipped
    model = ["--model", f"{__file__}:untrained_net", "--weights", str(weights)]
    main(["eval", *model, *BASE, "--detector", "energy", "--root", str(tmp_path / "data"), "--out", "run"])
    captured = capsys.readouterr()
    assert "far (fakedata stand-in) AUROC" in " ".join(captured.out.split()) and "fakedata (noise) stands in" in captured.err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results["ood_means"]) == ["far (fakedata stand-in)"] and results["ood_sets"][0]["stands_in_for"] == ["svhn"]


def test_eval_without_progress_bars_logs_one_line_per_stage(tmp_path, monkeypatch, capsys, weights):
    """--no-progress (a CI log): each AutoAttack component and each benchmark stage says its count and time;
    the opened-budget check names the PGD that stands in for AutoAttack."""
    monkeypatch.chdir(tmp_path)
    model = ["--model", f"{__file__}:untrained_net", "--weights", str(weights)]
    suite = ["--attack", "autoattack", "--param", "version=custom", "--param", "attacks=apgd-ce,apgd-t"]
    main(["eval", *model, "--dataset", "digits", "--eps", "0.1", "--limit", "64", "--device", "cpu", "--no-progress",
          *suite, "--detector", "energy", "--out", "run"])  # fmt: skip
    lines = [line[9:] for line in capsys.readouterr().err.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    log = results["attack"]["log"]
    clean = round(results["clean_accuracy"] * 64)
    robust = [round(row["accuracy"] * 64) for row in log]
    expected = [
        rf"attack apgd-ce: {clean} images attacked in \S+ s, {robust[0]} still robust",
        rf"attack apgd-t: {robust[0]} images attacked in \S+ s, {robust[1]} still robust",
        r"clean and robust accuracy: autoattack \(autoattack\) at eps=0\.1: done in \S+ s",
        r"attack sanity checks: done in \S+ s",
        r"fitting energy: done in \S+ s",
        r"OOD: fakedata \(far\): done in \S+ s",
    ]
    for pattern in expected:
        assert len([line for line in lines if re.fullmatch(pattern, line)]) == 1, (pattern, lines)
    unbounded = next(c for c in results["checks"] if c["name"] == "unbounded_attack")
    assert "pgd (reference), standing in for autoattack (autoattack)" in unbounded["detail"]


def _first(n):
    data = load_dataset("digits", "test", limit=n)
    return data.x, data.y


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ood", "svhm"], "unknown OOD set 'svhm'; valid names"),
        (["--ood", "mnist"], "--ood near:mnist or --ood far:mnist"),
        (["--detector", "energi"], "unknown detector 'energi'; valid names"),
        (["--eps", "8"], "8/255, not 8"),
        (["--norm", "l2"], "--attack autoattack_l2"),
        (["--dataset", "cifar11"], "unknown dataset 'cifar11'; valid names"),
        (["--limit", "0"], "positive number"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["eval", "--model", f"{__file__}:untrained_net", *CHEAP, *extra])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and message in err and err.startswith("error:") and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_an_existing_run_folder_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as done:
        main(["eval", "--model", f"{__file__}:untrained_net", *CHEAP, "--out", "taken"])
    assert done.value.code == 2 and "--overwrite or another --out" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_strict_exits_3_when_a_check_fails(tmp_path, monkeypatch, capsys):
    """An untrained model (the factory without --weights) is at chance: model_learned fails."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["eval", "--model", f"{__file__}:untrained_net", *CHEAP, "--out", "run", "--strict"])
    assert done.value.code == 3 and "fail: model_learned" in capsys.readouterr().err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {c["name"]: c["status"] for c in results["checks"]}["model_learned"] == "fail"


def test_without_a_model_it_evaluates_robustkits_cached_classifier(tmp_path, monkeypatch, net):
    """No --model or --weights: the dataset's standard classifier, as the recipes train it (stubbed here)."""
    import robustkit.app.runner as runner

    asked = {}

    def standard(train, seed, device, progress):
        asked.update(dataset=train.info.name, seed=seed)
        return net, {"arch": "small_cnn", "epochs": 10, "seed": seed, "cache": None, "cached": True}

    monkeypatch.setattr(runner, "default_classifier", standard)
    main(["eval", *CHEAP, "--seed", "2", "--out", str(tmp_path / "run")])
    assert asked == {"dataset": "digits", "seed": 2}
    assert "robustkit's `small_cnn` (10 epochs" in (tmp_path / "run" / "report.md").read_text()


def test_torchrun_two_processes_one_report(tmp_path, weights):
    """torchrun --nproc-per-node 2: a Gloo group is made and destroyed, only rank 0 writes and prints."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "robustkit", "eval", "--model", f"{__file__}:untrained_net", "--weights", str(weights), *BASE,
            "--detector", "energy", "--out", "run"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "destroy_process_group" not in done.stderr  # torch warns at exit about a group left alive
    assert done.stdout.count("report: run/report.md") == 1
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["clean_accuracy"] == accuracy(trained_net(), *_first(64))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["hist_fakedata.png", "ood_auroc.png", "report.md", "results.json"]


class _CountingDataset(torch.utils.data.Dataset):
    """digits test images one by one, counting the reads and the highest index read."""

    def __init__(self, data: ImageSet):
        self.data, self.reads, self.highest = data, 0, -1

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        self.highest = max(self.highest, int(i))
        return self.data.x[i], self.data.y[i]


def test_a_dataset_is_streamed_and_gives_the_numbers_of_the_same_images_in_memory(net):
    test, train = load_dataset("digits", "test", limit=200), load_dataset("digits", "train")
    common = {"attack": "pgd", "eps": 0.1, "attack_params": {"steps": 3}, "detectors": ["energy"],
              "ood": ["fakedata"], "train": train, "limit": 150, "seed": 2, "check_sample": 32}  # fmt: skip
    stream = _CountingDataset(test)
    streamed, in_memory = benchmark(net, stream, **common), benchmark(net, test, **common)
    assert streamed.n == in_memory.n == 150
    assert streamed.clean_accuracy == in_memory.clean_accuracy
    assert streamed.robust_accuracy == in_memory.robust_accuracy
    assert streamed.ood[0]["metrics"] == pytest.approx(in_memory.ood[0]["metrics"])
    assert stream.highest == 149 and stream.reads > 3 * 150  # only the first 150, read pass by pass, never collected
    loader = torch.utils.data.DataLoader(stream, batch_size=16)
    assert benchmark(net, loader, **common).robust_accuracy == in_memory.robust_accuracy
