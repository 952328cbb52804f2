"""Liveness: `robustkit.core.stages` logs each stage's start, the time left after its first batch and its end,
and the command line prints those lines on stderr whatever the progress-bar setting (issue 30, item 8)."""

import logging
import re

import pytest

from robustkit.app.logs import configure_logging
from robustkit.core import stages
from robustkit.core.stages import Stage, duration, stage


class Clock:
    """A fake `time.perf_counter`: each call returns the next of ``times``."""

    def __init__(self, *times: float):
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("robustkit")]


def test_a_stage_logs_its_start_one_estimate_after_the_first_batch_and_its_end(monkeypatch, caplog):
    # started at t=0; the first of four batches of 25 ends at t=10: 75 images left at 2.5 images/s is 30 s
    monkeypatch.setattr(stages.time, "perf_counter", Clock(0, 10, 40))
    with caplog.at_level(logging.INFO, logger="robustkit"), stage("attack pgd", total=100, note="eps 0.1") as st:
        for _ in range(4):
            st.advance(25)
    assert _lines(caplog) == [
        "attack pgd: started (100 images); eps 0.1",
        "attack pgd: 25/100 images in 10 s, about 30 s left",  # once, after the first batch only
        "attack pgd: 100 images in 40 s",
    ]


def test_laps_say_what_each_step_did_and_the_time_left_for_the_whole_stage(monkeypatch, caplog):
    # two epochs of 50 images: the first ends at t=20 (20 s for 50, so 20 s left), the second at t=50
    monkeypatch.setattr(stages.time, "perf_counter", Clock(0, 5, 20, 50, 50))
    with caplog.at_level(logging.INFO, logger="robustkit"), stage("training cnn6", total=100) as st:
        st.advance(10)
        st.advance(40)
        st.lap("epoch 1/2", "loss 0.5")
        st.advance(50)
        st.lap("epoch 2/2")
    lines = _lines(caplog)
    assert lines[1] == "training cnn6: 10/100 images in 5.0 s, about 45 s left"
    assert lines[2:] == [
        "training cnn6, epoch 1/2: 50 images in 20 s (loss 0.5), about 20 s left",
        "training cnn6, epoch 2/2: 50 images in 30 s",
        "training cnn6: 100 images in 50 s",
    ]


def test_an_interrupted_stage_says_how_far_it_got(caplog):
    with (
        caplog.at_level(logging.INFO, logger="robustkit"),
        pytest.raises(KeyboardInterrupt),
        stage("corruption fog", total=10, unit="corrupted images") as st,
    ):
        st.advance(4)
        raise KeyboardInterrupt
    assert re.fullmatch(r"corruption fog: stopped after 4/10 corrupted images, \d+\.\d s", _lines(caplog)[-1])


def test_interleaved_stages_count_only_their_own_time(monkeypatch, caplog):
    """An attack of a suite runs between the others' batches: its time is its own batches'."""
    monkeypatch.setattr(stages.time, "perf_counter", Clock(0, 100, 103, 200, 204))
    st = Stage("attack apgd-t", unit="images attacked", interleaved=True)
    with caplog.at_level(logging.INFO, logger="robustkit"):
        with st.timed(8):
            pass
        with st.timed(8):
            pass
        st.end()
    assert st.seconds == 7 and _lines(caplog)[-1] == "attack apgd-t: 16 images attacked in 7.0 s"


def test_a_stage_without_a_unit_counts_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="robustkit"), stage("fitting energy", unit=""):
        pass
    assert _lines(caplog)[0] == "fitting energy: started" and _lines(caplog)[1].startswith("fitting energy: done in ")


@pytest.mark.parametrize("seconds, text", [(0.42, "0.4 s"), (12.4, "12 s"), (185, "3 min 5 s"), (3725, "1 h 02 min")])
def test_durations(seconds, text):
    assert duration(seconds) == text


def test_the_library_is_quiet_until_the_application_configures_logging(capsys):
    with stage("attack pgd", total=2) as st:
        st.advance(1)
        st.advance(1)
    assert capsys.readouterr().err == ""
    undo = configure_logging()  # as the CLI does; stderr is not a terminal here: plain lines
    try:
        with stage("attack pgd", total=2) as st:
            st.advance(2)
    finally:
        undo()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(re.fullmatch(r"\d\d:\d\d:\d\d attack pgd: .+", line) for line in err)
    with stage("attack pgd", total=1) as st:  # undone: quiet again
        st.advance(1)
    assert capsys.readouterr().err == "" and logging.getLogger("robustkit").propagate


# ---------------------------------------------------------------- the stages' lines from real runs

TIME = re.compile(r"^\d\d:\d\d:\d\d ")


def _stderr_lines(err: str) -> list[str]:
    """The log lines of a CLI run's stderr, without their time."""
    return [TIME.sub("", line) for line in err.splitlines() if TIME.match(line)]


def _one(lines: list[str], pattern: str) -> str:
    found = [line for line in lines if re.fullmatch(pattern, line)]
    assert len(found) == 1, (pattern, lines)
    return found[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # empty: the first recipe trains its model


RECIPE = ["run", "fgsm-sweep", "--dataset", "digits", "--epochs", "1", "--limit", "20", "--no-progress"]


def test_a_recipe_without_progress_bars_logs_one_line_per_stage(tmp_path, monkeypatch, capsys, cache):
    from robustkit.app.cli import main

    monkeypatch.setenv("ROBUSTKIT_CACHE", str(cache))
    main([*RECIPE, "--out", str(tmp_path / "run")])
    lines = _stderr_lines(capsys.readouterr().err)
    _one(lines, r"training small_cnn: started \(1347 images\); 1 epoch of 1347 images")
    _one(lines, r"training small_cnn, epoch 1/1: 1347 images in \S+ s \(loss [\d.]+, train_accuracy [\d.]+\)")
    _one(lines, r"training small_cnn: 1347 images in \S+ s")
    report = tmp_path / "run" / "report.md"
    _one(lines, rf"fgsm-sweep: done in \S+ s, 1347 training and 20 test images of digits, report {report}")


def test_an_interrupted_recipe_names_its_own_command_to_pick_up(tmp_path, monkeypatch, capsys, cache):
    from robustkit.app import cli
    from robustkit.app.recipes import load_recipe

    monkeypatch.setenv("ROBUSTKIT_CACHE", str(cache))

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    def exit_now(code):  # os._exit would end pytest too
        raise SystemExit(code)

    monkeypatch.setattr(load_recipe("fgsm-sweep"), "eps_sweep", ctrl_c)  # Ctrl-C after the model is there
    monkeypatch.setattr(cli.os, "_exit", exit_now)
    with pytest.raises(SystemExit) as stopped:
        cli.main([*RECIPE, "--out", str(tmp_path / "cut")])
    err = capsys.readouterr().err
    assert stopped.value.code == 130
    assert f"`robustkit {' '.join(RECIPE)} --out {tmp_path / 'cut'} --overwrite`" in err and "--resume" not in err
    assert "training small_cnn" not in err  # the model came from the cache the first test filled
    assert "--resume" in cli.restart_hint(["eval", "--out", "x", "--overwrite"]) and "--overwrite" not in cli.restart_hint(
        ["eval", "--out", "x", "--overwrite"]
    )


def test_each_corruption_and_each_sigma_logs_its_line(model, digits_test, caplog):
    from robustkit.evaluate import certified_accuracy, corruption_accuracy

    x, y = digits_test.x[:16], digits_test.y[:16]
    with caplog.at_level(logging.INFO, logger="robustkit"):
        result = corruption_accuracy(model, x, y, severities=[1, 2])
        for sigma in (0.12, 0.25):
            certified_accuracy(model, x, y, sigma=sigma, n0=10, n=50)
    lines = _lines(caplog)
    for c, row in result.accuracy.items():  # 14 on digits: frost is skipped
        mean = sum(row.values()) / len(row)
        _one(lines, rf"corruption {c}: 32 corrupted images in \S+ s, mean accuracy {mean:.3f}")
    ends = [line for line in lines if re.match(r"corruption \S+: 32 corrupted images in", line)]
    assert len(ends) == len(result.accuracy) == 14
    for sigma in ("0.12", "0.25"):
        _one(lines, rf"certify σ={sigma}: 16 images in \S+ s")


def test_an_eps_sweep_and_each_ood_scoring_pass_log_their_lines(model, digits_test, caplog):
    import torch

    import robustkit as rk
    from robustkit.evaluate import eps_sweep, ood

    x, y = digits_test.x[:48], digits_test.y[:48]
    energy = rk.detector("energy").fit(model)
    with caplog.at_level(logging.INFO, logger="robustkit"):
        eps_sweep(rk.attack("pgd", steps=2), model, x, y, eps_values=[0.05, 0.1], batch_size=16)
        noise = torch.rand(20, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        ood(energy, x, noise)
        ood([energy, rk.detector("max_logit").fit(model)], x, noise)
    lines = _lines(caplog)
    assert re.fullmatch(r"eps sweep of pgd \(reference\) at 2 budgets: 16/48 images in \S+ s, about \S+ s left", lines[0])
    _one(lines, r"eps sweep of pgd \(reference\) at 2 budgets: 48 images in \S+ s")
    for which, n in (("energy), ID", 48), ("energy), OOD", 20), ("2 detectors), ID", 48), ("2 detectors), OOD", 20)):
        _one(lines, rf"OOD scores \({re.escape(which)} images: started \({n} images\)")
        _one(lines, rf"OOD scores \({re.escape(which)} images: {n} images in \S+ s")
