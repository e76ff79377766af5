"""The real-MNIST fixture: `../shared/data/mnist` linked as `<tmp>/mnist`, or a skip."""

import os

import pytest

SHARED_MNIST = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "..",
    "shared",
    "data",
    "mnist",
)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    """A data root whose `mnist/` holds the real MNIST files (the shared copy, linked)."""
    src = os.path.realpath(SHARED_MNIST)
    if not os.path.isfile(os.path.join(src, "SHA256SUMS")):
        pytest.skip(f"real MNIST needs the shared copy at {src} (absent in this clone)")
    root = tmp_path_factory.mktemp("data")
    os.symlink(src, root / "mnist")
    return str(root)
