"""Sanity checks reach the run folder and the CLI: report section, results.json, --strict."""

import json

import pytest

from robustkit.app import sanity
from robustkit.app.cli import main
from robustkit.evaluate.diagnose import Check


def test_section_goes_before_the_first_section_or_finding():
    checks = [Check("model_learned", "fail", "at chance"), Check("gradients_available", "pass", "fine")]
    lines = ["# Title", "", "summary", "", "Finding: x is robust.", "", "## Numbers"]
    out = sanity.with_section(lines, checks)
    at = out.index("## Sanity checks")
    assert out[:at] == lines[:4] and out.index("Finding: x is robust.") > at
    assert "1 of 2 checks warn or fail" in "\n".join(out) and "**FAIL**" in "\n".join(out)
    assert sanity.with_section(lines, []) == lines
    assert sanity.problems({"checks": [c.as_dict() for c in checks]})[0]["name"] == "model_learned"


@pytest.mark.parametrize("strict", [False, True])
def test_attack_command_puts_checks_first_and_strict_exits_3(tmp_path, monkeypatch, capsys, digits_train, strict):
    from robustkit.modelling.checkpoint import save_checkpoint
    from robustkit.modelling.models import build_model, model_spec

    monkeypatch.chdir(tmp_path)
    spec = model_spec("small_cnn", digits_train.info)
    save_checkpoint(tmp_path / "untrained.pt", build_model(spec), spec, {})  # at chance: model_learned fails
    args = ["attack", "--weights", "untrained.pt", "--attack", "fgsm", "--eps", "0.1", "--limit", "64", "--device", "cpu"]
    if strict:
        with pytest.raises(SystemExit) as done:
            main([*args, "--strict"])
        assert done.value.code == sanity.STRICT_EXIT
    else:
        main(args)
    err = capsys.readouterr().err
    assert "fail: model_learned" in err
    results = json.loads((tmp_path / "runs" / "attack" / "results.json").read_text())
    statuses = {c["name"]: c["status"] for c in results["checks"]}
    assert statuses["model_learned"] == "fail"
    report = (tmp_path / "runs" / "attack" / "report.md").read_text()
    assert report.index("## Sanity checks") < report.index("| clean accuracy |")


def test_demo_prints_how_many_checks_of_each_recipe_warn_or_fail(tmp_path, monkeypatch, capsys):
    """`robustkit demo` (make demo): one line per recipe with its time, its warned or failed checks, its report.
    Here on one recipe with a one-epoch profile, so it runs in seconds."""
    import dataclasses
    import re

    from robustkit.app import cli, runner
    from robustkit.app.recipes import recipes

    monkeypatch.setattr(cli, "recipes", lambda: {"fgsm-sweep": recipes()["fgsm-sweep"]})
    small = runner.PROFILES["small"]
    quick = dataclasses.replace(small, train=dataclasses.replace(small.train, epochs=1), test_limit=60)
    monkeypatch.setitem(runner.PROFILES, "small", quick)
    main(["demo", "--out", str(tmp_path / "demo")])
    line = capsys.readouterr().out.strip()
    folder = tmp_path / "demo" / "fgsm-sweep"
    results = json.loads((folder / "results.json").read_text())
    found = sanity.problems(results)
    assert results["checks"] and results["train_config"]["epochs"] == 1
    words = f"{len(found)} check{'' if len(found) == 1 else 's'} warn/fail"
    assert re.fullmatch(rf"fgsm-sweep +\d+\.\d s  {words} +{re.escape(str(folder / 'report.md'))}", line), line
