"""Make the repository root importable and keep every test deterministic."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def gen():
    """A fixed-seed CPU generator: every random draw in a test comes from it."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cifar(tmp_path_factory):
    """A tiny CIFAR-10 folder in the python-batch format (8 images per training batch file, 6
    test images), shared by every test that runs a training script on CIFAR-10."""
    from tests.test_data_metrics import write_tiny_cifar
    root = tmp_path_factory.mktemp("cifar")
    write_tiny_cifar(str(root), n_train=8, n_test=6)
    return str(root)
