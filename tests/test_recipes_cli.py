import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report_values import check_counts, report_problems  # tests/ is on sys.path (rootdir conftest)
from typer.testing import CliRunner

from robustkit.app.cli import app, main
from robustkit.app.recipes import load_recipe, recipes
from robustkit.app.runner import RecipeOptions

RECIPES = list(recipes())

KEYS = {
    "ood-baselines": {"metrics", "clean_accuracy", "ood_set"},
    "fgsm-budget": {"untargeted", "targeted"},
    "fgsm-sweep": {"untargeted", "targeted", "clean_accuracy"},
    "adversarial-training-ood": {"sweeps", "ood", "clean_accuracy", "catastrophic_overfitting", "training"},
    "squeeze-distill": {"accuracy", "detector", "gradient_masking_suspected", "clean"},
    "ae-purification": {"accuracy", "eps"},
    "defense-matrix": {"accuracy", "eps", "deepfool", "adversarial_training"},
    "corruption-robustness": {"corruption", "mce", "relative_mce", "source", "skipped", "images"},
    "certified-vs-empirical": {"sigmas", "standard_clean", "images", "n", "n0", "alpha"},
}

FIGURES = {  # the figures EXPERIMENTS.md names, and the worked examples' grid and heatmap (issue 15)
    "ood-baselines": ["roc.png", "pr.png", "hist_max_logit.png", "sorted_max_logit.png", "hist_reconstruction.png"],
    "fgsm-budget": ["untargeted_examples.png", "targeted_examples.png"],
    "fgsm-sweep": ["eps_curve.png", "grid_eps_0.01.png", "grid_eps_0.1.png", "grid_eps_0.3.png"],
    "adversarial-training-ood": ["eps_curves.png", "hist_robust_0.1_max_softmax.png", "roc_fakedata_max_logit.png",
                                 "pr_fakedata_max_softmax.png"],
    "squeeze-distill": ["squeezing_roc.png"],
    "ae-purification": ["purification.png"],
    "defense-matrix": ["matrix.png"],
    "corruption-robustness": ["heatmap_standard.png", "heatmap_robust.png"],
    "certified-vs-empirical": ["certified_vs_empirical.png"],
}


EXPECTED_CHECKS = {
    "ood-baselines": {"model_learned", "ood_auroc", "ood_saturated"},
    "fgsm-budget": {"model_learned"},
    "fgsm-sweep": {"model_learned", "monotone_in_eps"},
    "adversarial-training-ood": {"model_learned", "defense_cost", "catastrophic_overfitting", "monotone_in_eps", "ood_auroc"},
    "squeeze-distill": {"model_learned", "defense_cost", "gradients_available", "unbounded_attack"},
    "ae-purification": {"model_learned", "defense_cost", "adaptive_vs_oblivious"},
    "defense-matrix": {"model_learned", "iterative_vs_single_step", "catastrophic_overfitting", "defense_cost", "adaptive_vs_oblivious"},
    "corruption-robustness": {"model_learned", "defense_cost"},
    "certified-vs-empirical": {"model_learned", "certified_vs_empirical"},
}


def _in_unit(value):
    if isinstance(value, dict):
        return all(_in_unit(v) for v in value.values())
    return value is None or 0.0 <= value <= 1.0


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_on_digits(tmp_path, name):
    options = RecipeOptions(dataset="digits", epochs=3, out=tmp_path / name, progress=False, limit=120)
    own = {"deepfool_steps": 10} if name == "defense-matrix" else {}  # ART's DeepFool: whole batch until the last flips
    folder = load_recipe(name).run(options, **own)
    results = json.loads((folder / "results.json").read_text())
    assert KEYS[name] <= set(results) and results["recipe"] == name
    assert set(FIGURES[name]) <= set(results["run"]["figures"]) and "source" in results["run"]
    for figure in results["run"]["figures"]:
        assert (folder / figure).stat().st_size > 1000
    report = (folder / "report.md").read_text()
    assert report.startswith("# ") and "| " in report
    assert report_problems(report) == [] and check_counts(report, results) == []  # one value per quantity, counted
    assert all(f"]({figure})" in report for figure in results["run"]["figures"])  # the report shows every figure ...
    assert "**What to look at.**" in report  # ... and says what to look at
    assert results["findings"] and "## Findings" in report
    assert all(sentence in report for sentence in results["findings"])  # the report states what the function computed
    assert load_recipe(name).findings(load_recipe(name).numbers(results)) == results["findings"]
    names = {c["name"].split(" (")[0] for c in results["checks"]}
    assert EXPECTED_CHECKS[name] <= names, names  # the checks that apply ran ...
    assert all(c["status"] in ("pass", "warn", "fail") and c["detail"] and c["paper"] for c in results["checks"])
    assert report.index("## Sanity checks") < report.index("## Findings")  # ... and come before the findings
    if name == "fgsm-sweep":
        assert results["untargeted"]["accuracy"][0] == results["clean_accuracy"]
        assert all(0 <= a <= 1 for a in results["untargeted"]["accuracy"])
    if name == "ood-baselines":
        assert all(0 <= m["AUROC"] <= 1 for m in results["metrics"].values())
    if name in ("ae-purification", "defense-matrix"):
        assert _in_unit(results["accuracy"])
    if name == "ae-purification":
        assert set(results["accuracy"]) == {"no defense", "AE, oblivious", "AE, adaptive (BPDA)", "AE, adaptive (through the AE)"}
        grid = results["grid"]
        assert len(grid["images"]) == len(set(grid["images"])) == 8
        assert 0 <= grid["restored"] <= grid["fooled"] <= grid["clean_right"] <= 120
        assert grid["shown_restored"] == min(grid["restored"], 8 - min(4, grid["fooled"] - grid["restored"]))
        assert not grid["fooled"] or f"gives {grid['restored']} of them" in report
    if name == "defense-matrix":
        fgsm = results["accuracy"]["none"]["fgsm"]
        assert f"undefended model's {min(fgsm, results['accuracy']['none']['pgd']):.2f}" in report
    if name == "squeeze-distill":
        assert set(results["clean"]) == {"baseline", "teacher", "distilled"}
        assert results["gradient_masking_suspected"] == ("the saturated softmax hid the gradient" in report or
                                                         "signature of gradient masking" in report)  # fmt: skip
        base, n = results["accuracy"]["baseline"], 120  # successful: right before the attack and wrong after
        for name in ("pgd_linf", "pgd_l2", "ddn"):
            right, still = round(base["clean"] * n), round(base[name] * n)
            assert right - still <= results["detector"][name]["successful_examples"] <= right
    if name == "corruption-robustness":  # digits: frost skipped, 14 corruptions × 5 severities, on 120 images
        assert results["images"] == 120 and set(results["skipped"]) == {"frost"}
        assert len(results["corruption"]["robust"]["accuracy"]) == 14 and "make_cifar_c.py" in results["source"]
    if name == "fgsm-budget":
        for image in results["untargeted"]["images"]:
            assert image["success"] == (image["k"] is not None)


def test_runs_record_the_commit_they_ran_from():
    import robustkit
    from robustkit.app.report import source

    checkout = Path(robustkit.__file__).resolve().parents[1]
    found = source()
    if (checkout / ".git").exists():  # a checkout (CI, make test): the commit and whether tracked files differ
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert found is not None and found["commit"] == head.strip() and isinstance(found["modified"], bool)
    else:  # an installed wheel
        assert found is None


def test_run_folder_is_not_overwritten(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        load_recipe("fgsm-sweep").run(RecipeOptions(dataset="digits", out=tmp_path / "x", progress=False))
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_recipe_on_a_cifar10_format_folder(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 64), ("test_batch", 32)):
        labels = rng.integers(0, 10, n)
        data = rng.integers(0, 60, (n, 3, 32, 32)) + (labels * 20)[:, None, None, None]  # learnable colour cue
        pickle.dump(
            {"data": data.astype(np.uint8).reshape(n, -1), "labels": labels.tolist()}, open(folder / name, "wb")
        )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    pickle.dump({"label_names": names}, open(folder / "batches.meta", "wb"))
    options = RecipeOptions(dataset="cifar10", root=tmp_path / "data", epochs=1, out=tmp_path / "run", progress=False)
    out = load_recipe("fgsm-sweep").run(options, eps="0,0.01,0.1")
    results = json.loads((out / "results.json").read_text())
    assert results["target"] == "horse" and len(results["untargeted"]["eps"]) == 3


def test_cli_help_lists_and_errors():
    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    listing = runner.invoke(app, ["list", "attacks"])
    assert listing.exit_code == 0 and "ddn" in listing.output and "foolbox" in listing.output
    assert "fgsm-budget" in runner.invoke(app, ["recipes"]).output
    everything = runner.invoke(app, ["list"])
    assert everything.exit_code == 0
    assert all(word in everything.output for word in ("attacks", "detectors", "defenses", "mahalanobis", "bit_depth"))


def test_run_help_lists_recipes_and_each_recipe_shows_its_full_usage(capsys):
    main(["run", "--help"])  # help returns normally (exit status 0)
    listing = capsys.readouterr().out
    assert all(name in listing for name in RECIPES)
    main(["run", "fgsm-sweep", "--help"])
    usage = capsys.readouterr().out
    assert "robustkit run fgsm-sweep [OPTIONS]" in usage
    assert "class of the targeted sweep" in usage and "auto (CUDA when available)" in usage


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nonsense"], "unknown recipe"),
        (["run", "fgsm-sweep", "--dataset", "cifar11"], "unknown dataset"),
        (["attack", "--weights", "missing.pt"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "robustkit", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_recipe_determinism(tmp_path):
    def once(out):
        return json.loads(
            (
                load_recipe("fgsm-sweep").run(
                    RecipeOptions(dataset="digits", epochs=2, out=out, progress=False, cache=False)
                )
                / "results.json"
            ).read_text()
        )

    a, b = once(tmp_path / "a"), once(tmp_path / "b")
    assert a["untargeted"] == b["untargeted"] and a["targeted"] == b["targeted"]


def test_recipe_usage_errors_and_flags(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "robustkit", "run", "fgsm-sweep", "--no-such-flag"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "No such option" in bad.stderr and "Traceback" not in bad.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustkit.app.cli",
            "run",
            "fgsm-budget",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--no-progress",
            "--images",
            "2",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "run" / "results.json").is_file()


def test_seeds_give_mean_and_spread_and_share_the_cache(tmp_path):
    options = RecipeOptions(dataset="digits", epochs=1, out=tmp_path / "s", progress=False, limit=60, seeds=2,
                            cache=tmp_path / "cache")  # fmt: skip
    folder = load_recipe("fgsm-sweep").run(options, eps="0,0.05,0.1")
    results = json.loads((folder / "results.json").read_text())
    assert results["seeds"] == [0, 1] and len(results["per_seed"]) == 2
    per_seed = [json.loads((folder / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["options"]["seed"] for r in per_seed] == [0, 1]
    clean = [r["clean_accuracy"] for r in per_seed]
    assert results["mean"]["acc@0"] == pytest.approx(sum(clean) / 2)
    report = (folder / "report.md").read_text()
    assert "2 seeds" in report and "±" in report and "(seed-1/report.md)" in report and "## Findings (from the means)" in report
    assert "(mean ± sample std over 2 runs, each on the same 60 test images)" in report  # the table's image count
    assert results["images"]["test"] == 60 and all(r["images"] == results["images"] for r in per_seed)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # one model per seed
    again = load_recipe("fgsm-sweep").run(
        RecipeOptions(dataset="digits", epochs=1, out=tmp_path / "t", progress=False, limit=60, seeds=2,
                      cache=tmp_path / "cache"), eps="0,0.05,0.1")  # fmt: skip
    assert json.loads((again / "results.json").read_text())["mean"] == results["mean"]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # the second run trained nothing


def test_fidelity_benchmark_on_a_cifar10_format_folder(tmp_path, monkeypatch):
    from benchmarks import fidelity

    monkeypatch.setenv("ROBUSTKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 64), ("test_batch", 32)):
        labels = rng.integers(0, 10, n)
        data = rng.integers(0, 60, (n, 3, 32, 32)) + (labels * 20)[:, None, None, None]
        pickle.dump({"data": data.astype(np.uint8).reshape(n, -1), "labels": labels.tolist()}, open(folder / name, "wb"))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    pickle.dump({"label_names": names}, open(folder / "batches.meta", "wb"))
    page = tmp_path / "fidelity.md"
    page.write_text("# Fidelity\n\nbefore\n<!-- fidelity:begin -->\nold\n<!-- fidelity:end -->\nafter\n")
    out = fidelity.main(["--root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--recipes", "fgsm-sweep",
                         "--docs", str(page), "--epochs", "2"])  # fmt: skip
    rows = {r["key"]: r for r in out["rows"]}
    assert rows["acc@0"]["write_up"] == 0.6 and rows["acc@0"]["plain_pytorch"]["mean"] is not None
    assert 0 <= rows["acc@0.01"]["robustkit"]["mean"] <= 1
    table = (tmp_path / "out" / "fidelity.md").read_text()
    assert "| fgsm-sweep | clean accuracy | 0.6 |" in table and "| 1 |" in table and "64 CIFAR-10 training images (about 0%" in table
    assert json.loads((tmp_path / "out" / "fidelity.json").read_text())["rows"]
    assert "robustkit commit: " in table  # which code made the numbers
    text = page.read_text()
    assert "old" not in text and "| fgsm-sweep |" in text and text.endswith("after\n") and "before" in text


def test_strict_passes_a_clean_recipe_and_exits_3_on_a_legitimate_warning(tmp_path, capsys):
    """fgsm-budget on digits is clean. squeeze-distill on digits legitimately warns: the distilled model's
    saturated softmax zeroes input gradients and PGD-L2 with its budget opened cannot reach 0% (the
    gradient masking of Carlini & Wagner 2016); --strict turns that into exit status 3."""
    from robustkit.app.sanity import STRICT_EXIT

    common = ["--dataset", "digits", "--no-progress", "--limit", "120", "--epochs", "3", "--strict"]
    main(["run", "fgsm-budget", *common, "--out", str(tmp_path / "clean")])
    clean = json.loads((tmp_path / "clean" / "results.json").read_text())
    assert clean["checks"] and all(c["status"] == "pass" for c in clean["checks"])
    assert "warn" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["run", "squeeze-distill", *common, "--out", str(tmp_path / "masked")])
    assert done.value.code == STRICT_EXIT
    err = capsys.readouterr().err
    statuses = {c["name"]: c["status"] for c in json.loads((tmp_path / "masked" / "results.json").read_text())["checks"]}
    check = "unbounded_attack (PGD L2 on the distilled model, the 120 attacked images)"
    assert statuses[check] in ("warn", "fail")
    assert check in err and "--strict" in err


def test_attack_report_names_attack_images_and_model_and_gives_one_value_per_quantity(tmp_path, capsys, model, digits_test):
    """Issue 23: the title was a repr, and the headline robust accuracy (0.0019) and its sweep row (0.0) at the same
    eps differed: eps_sweep attacked its second batch of 256 with the random starts of the first batch's images."""
    import robustkit as rk
    from robustkit.evaluate import robust_accuracy
    from robustkit.modelling.checkpoint import save_checkpoint

    weights, out = tmp_path / "digits.pt", tmp_path / "run"
    save_checkpoint(weights, model, model.robustkit_spec, {})
    main(["attack", "--weights", str(weights), "--eps", "0.1", "--steps", "3", "--sweep", "0,0.05,0.1", "--limit", "300",
          "--no-progress", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert "(300 digits test images)" in capsys.readouterr().out
    results, report = json.loads((out / "results.json").read_text()), (out / "report.md").read_text()
    title = f"# PGD L∞ at eps 0.1, 3 steps (reference backend) on 300 digits test images, model `{weights}`\n"
    assert report.startswith(title)
    x, y, pgd = digits_test.x[:300], digits_test.y[:300], rk.attack("pgd", eps=0.1, steps=3)
    expected = robust_accuracy(pgd, model, x, y)  # RobustBench's definition, as eval reports it
    assert results["images"] == results["sweep"]["images"] == 300
    assert (results["clean_accuracy"], results["robust_accuracy"]) == (expected["clean_accuracy"], expected["accuracy"])
    at_half = robust_accuracy(pgd.with_params(eps=0.05), model, x, y)["accuracy"]
    assert results["sweep"]["accuracy"] == [expected["clean_accuracy"], at_half, expected["accuracy"]]
    assert 0 < results["robust_accuracy"] < at_half < results["clean_accuracy"]
    # every table says how many images it is about
    assert f"| images | clean accuracy | robust accuracy |\n|---|---|---|\n| 300 | {results['clean_accuracy']:.4g} |" in report
    assert "| eps | images | robust accuracy |" in report and report.count("| 300 |") == 4
    assert "The checks ran on a seeded sample of 256 of the 300 images" in report


def test_piped_help_is_whole():
    """rich lays help out 80 columns wide when stdout is not a terminal and cut long words ("resnet…")."""
    from robustkit.app.cli import EVAL_HELP

    runner = CliRunner()

    def flat(*args):
        done = runner.invoke(app, [*args, "--help"], prog_name="robustkit")
        assert done.exit_code == 0, done.output
        return " ".join(done.output.split())

    root, evaluate, attack = flat(), flat("eval"), flat("attack")
    assert EVAL_HELP in root and EVAL_HELP in evaluate and "Usage: robustkit eval [OPTIONS]" in evaluate
    assert "module:factory (or file.py:factory) that builds the model, e.g. torchvision.models:resnet18" in evaluate
    assert "…" not in root + evaluate + attack and "--no-progress show progress bars" in attack.replace("/", "")
