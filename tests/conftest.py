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
