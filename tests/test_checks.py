import math

import pytest
import torch

from robustkit.core.checks import check_images, check_labels, parse_eps, preserved_state


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.rand(2, 1, 8, 8) * 255, ValueError, "divide by 255"),
        (torch.randn(2, 1, 8, 8), ValueError, "normalised"),
        (torch.rand(1, 8, 8), ValueError, "N×C×H×W"),
        (torch.rand(0, 1, 8, 8), ValueError, "empty"),
        (torch.full((1, 1, 8, 8), math.nan), ValueError, "NaN"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), TypeError, "float"),
        ([[0.5]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images(x, error, match):
    with pytest.raises(error, match=match):
        check_images(x)


def test_labels_and_eps():
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        check_labels(torch.tensor([0, 10]), 2, 10)
    with pytest.raises(TypeError, match="int64"):
        check_labels(torch.tensor([0.0, 1.0]), 2, 10)
    with pytest.raises(ValueError, match="one label per image"):
        check_labels(torch.tensor([0]), 2, 10)
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    for bad, match in ((-0.1, "finite"), ("abc", "not a number"), (8, "pixel units"), (math.inf, "finite")):
        with pytest.raises(ValueError, match=match):
            parse_eps(bad)


def test_preserved_state_restores_even_on_error():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    net.train()
    net[0].bias.requires_grad_(False)
    net[0].weight.grad = torch.ones(2, 2)
    with pytest.raises(RuntimeError), preserved_state(net):
        net.eval()
        net[0].weight.grad.add_(5)
        raise RuntimeError("boom")
    assert net.training and net[1].training
    assert net[0].weight.requires_grad and not net[0].bias.requires_grad
    assert torch.equal(net[0].weight.grad, torch.ones(2, 2))
