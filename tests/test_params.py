"""One parameter convention: declared once, validated at construction, listed from the declaration."""

import pytest
import torch

import robustkit as rk
from robustkit.core.params import Param
from robustkit.registry import KINDS, catalogue, classes


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: rk.attack("pgd", eps=0.1, alpha=-0.02), ValueError, "alpha=-0.02 is out of range: it must be > 0"),
        (lambda: rk.attack("pgd", eps=0.1, alpha=0), ValueError, "alpha=0 is out of range"),
        (lambda: rk.attack("pgd", random_start="yes"), TypeError, "random_start must be bool"),
        (lambda: rk.attack("pgd", steps=True), TypeError, "steps must be int"),
        (lambda: rk.attack("pgd", steps=2.5), TypeError, "steps must be int"),
        (lambda: rk.attack("pgd", steps=0), ValueError, "steps=0 is out of range"),
        (lambda: rk.attack("pgd", stepz=3), TypeError, "no parameter stepz; valid parameters: eps, alpha, steps"),
        (lambda: rk.attack("deepfool", "art", max_iter=5), TypeError, "valid parameters: steps, overshoot"),
        (lambda: rk.attack("autoattack", version="fast"), ValueError, "not one of 'standard', 'plus', 'rand'"),
        (lambda: rk.detector("energy", t=1.0), TypeError, "no parameter t; valid parameters: temperature"),
        (lambda: rk.detector("energy", temperature=0), ValueError, "temperature=0 is out of range"),
        (lambda: rk.detector("knn", k=0), ValueError, "k=0 is out of range"),
        (lambda: rk.detector("feature_squeezing", squeezers=4), TypeError, "squeezers must be tuple"),
        (lambda: rk.detector("feature_squeezing", squeezers=()), ValueError, "squeezers is empty"),
        (lambda: rk.detector("feature_squeezing", squeezers=("blur:3",)), ValueError, "unknown squeezer"),
        (lambda: rk.defense("bit_depth", bits=9), ValueError, "bits=9 is out of range"),
        (lambda: rk.defense("median_filter", size=True), TypeError, "size must be int"),
        (lambda: rk.defense("adversarial_training", mix=0), ValueError, "mix=0 is out of range"),
        (lambda: rk.defense("adversarial_training", attack="fgsm"), TypeError, "attack must be Attack"),
        (lambda: rk.defense("distillation", temperature=-1), ValueError, "temperature=-1 is out of range"),
        (lambda: rk.defense("squeezed_training", squeezer="median_filter:x"), ValueError, "positive integer"),
    ],
)
def test_bad_parameters_fail_at_construction(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_same_idea_same_name_across_backends():
    """DeepFool's iteration cap is `steps` on every backend; temperatures are `temperature`."""
    assert rk.attack("deepfool", "art", steps=3).params["steps"] == 3
    assert rk.attack("deepfool", "torchattacks", steps=3).params["steps"] == 3
    for name in ("max_softmax", "energy", "odin"):
        assert "temperature" in rk.detector(name).params


@pytest.mark.parametrize("temperature", [1.0, 5.0])
def test_energy_temperature_reaches_the_backend(model, digits_test, temperature):
    x = digits_test.x[:16]
    scores = rk.detector("energy", temperature=temperature).fit(model).score(x)
    with torch.no_grad():
        expected = -temperature * torch.logsumexp(model(x) / temperature, dim=1)
    assert torch.allclose(scores, expected, atol=1e-5)


def test_values_are_normalised():
    assert rk.attack("pgd", eps="8/255").eps == pytest.approx(8 / 255)
    assert rk.defense("adversarial_training", mix=1).params["mix"] == 1.0
    assert isinstance(rk.defense("adversarial_training", mix=1).params["mix"], float)
    assert rk.detector("feature_squeezing", squeezers=["bit_depth:4"]).params["squeezers"] == ("bit_depth:4",)
    assert rk.detector("feature_squeezing", squeezers="bit_depth:4").params["squeezers"] == ("bit_depth:4",)


def test_one_name_on_the_command_line_is_a_sequence_of_one():
    """``--param attacks=apgd-ce`` parses to a string; a sequence parameter takes it as one name (not refused,
    not split into characters), as ``--param attacks=apgd-ce,apgd-t`` gives two."""
    from robustkit.app.cli import _parse_params

    one = rk.attack("autoattack", version="custom", **_parse_params(["attacks=apgd-ce"]))
    two = rk.attack("autoattack", version="custom", **_parse_params(["attacks=apgd-ce,apgd-t"]))
    assert one.params["attacks"] == ("apgd-ce",) and two.params["attacks"] == ("apgd-ce", "apgd-t")
    assert one.component_labels() == ["apgd-ce"]


def test_with_params_validates_and_describe_is_jsonable():
    import json

    pgd = rk.attack("pgd", eps=0.1, steps=5)
    assert pgd.with_params(steps=7).params["steps"] == 7
    with pytest.raises(ValueError, match="steps=-1"):
        pgd.with_params(steps=-1)
    trainer = rk.defense("adversarial_training", attack=pgd, train_config=rk.TrainConfig(epochs=2))
    described = json.loads(json.dumps(trainer.describe()))
    assert described["attack"]["name"] == "pgd" and described["attack"]["steps"] == 5
    assert described["train_config"]["epochs"] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_every_component_declares_help_and_a_paper(kind):
    """The declaration feeds `robustkit list` and the docs: every parameter has help, every class a paper."""
    rows = catalogue(kind)
    assert len(rows) == len(classes(kind))
    for row in rows:
        assert row["summary"] and "http" in row["paper"], row["name"]
        for p in row["params"]:
            assert p["help"] and p["type"], (row["name"], p)


def test_param_range_text_and_types_by_hand():
    p = Param("x", 1.0, "h", low=0, high=1, low_open=True)
    assert p.range_text() == "(0, 1]" and p.validate("o", 1) == 1.0
    with pytest.raises(ValueError, match="x=nan must be finite"):
        p.validate("o", float("nan"))
    with pytest.raises(TypeError, match="x must be float"):
        p.validate("o", "0.5")
    assert Param("n", 1, "h", types=(int,), low=1).range_text() == "≥ 1"
    assert Param("b", None, "h", budget=True, optional=True).validate("o", "2/255") == pytest.approx(2 / 255)
