"""Shared fixtures: an isolated model cache, digits data and one small trained model."""

import os
import tempfile

import pytest
import torch

os.environ.setdefault("ROBUSTKIT_CACHE", tempfile.mkdtemp(prefix="robustkit-test-cache-"))
torch.set_num_threads(1)  # 8×8 digits in small passes: a second thread only adds waiting, most on a busy machine


@pytest.fixture(scope="session")
def digits_train():
    from robustkit.modelling.data import load_dataset

    return load_dataset("digits", "train")


@pytest.fixture(scope="session")
def digits_test():
    from robustkit.modelling.data import load_dataset

    return load_dataset("digits", "test")


@pytest.fixture(scope="session")
def model(digits_train):
    """A small CNN trained on digits for a few epochs (about 97% test accuracy)."""
    from robustkit.modelling.models import model_spec
    from robustkit.modelling.train import TrainConfig, train_model

    net, _ = train_model(
        model_spec("small_cnn", digits_train.info), digits_train, TrainConfig(epochs=6, lr=2e-3), progress=False
    )
    return net


@pytest.fixture()
def batch(digits_test):
    return digits_test.x[:32], digits_test.y[:32]


class KWTA(torch.nn.Module):
    """k-winners-take-all (Xiao et al. 2020): only the largest ``ratio`` of a layer's activations pass. The
    function jumps wherever the winners change, so its gradient is right only very close to the input."""

    def __init__(self, ratio: float = 0.1):
        super().__init__()
        self.ratio = ratio

    def forward(self, x):
        flat = x.flatten(1)
        k = max(1, int(self.ratio * flat.shape[1]))
        return (flat * (flat >= flat.topk(k, dim=1).values[:, -1:])).view_as(x)


@pytest.fixture(scope="session")
def kwta_model(digits_train):
    """A k-WTA CNN trained on digits for 8 epochs: discontinuous activations (a defense that masks gradients)."""
    from torch import nn

    from robustkit.modelling.models import with_normalization

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), KWTA(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(16 * 16, 64), KWTA(0.2), nn.Linear(64, 10))  # fmt: skip
    model = with_normalization(net, digits_train.info.mean, digits_train.info.std)
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(8):
        order = torch.randperm(len(digits_train.x))
        for i in range(0, len(order), 64):
            rows = order[i : i + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(digits_train.x[rows]), digits_train.y[rows]).backward()
            optimiser.step()
    return model.eval()
