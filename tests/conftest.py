"""Shared test set-up: CUDA tests skip without a GPU, and every test starts from a fixed seed."""

import os

import pytest
import torch

# cuBLAS is deterministic only with a fixed workspace; some torch versions raise under
# torch.use_deterministic_algorithms(True) without it (the deterministic-mode CUDA tests). Read
# when the first cuBLAS handle is made, so setting it before any test runs is enough.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
