"""Real MNIST through the project's reader (the shared copy), and the faithful MNISTClassifier."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from detection._ext import HAS_OPS
from detection.experiments.scaled_mnist import data as D
from detection.experiments.scaled_mnist import train as T
from detection.experiments.scaled_mnist.models import MNISTClassifier, build_model
import detection.layers as L

needs_dcn = pytest.mark.skipif(
    not (HAS_OPS and hasattr(L, "DeformConv2d")),
    reason="needs detection.layers.DeformConv2d and the compiled ops",
)
# Per-digit label counts 0-9, from ../shared/data/mnist/README.md (the published MNIST counts).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_shared_files_match_their_checksums(mnist_root):
    folder = os.path.join(mnist_root, "mnist")
    with open(os.path.join(folder, "SHA256SUMS")) as f:
        lines = f.read().splitlines()
    for line in lines:
        digest, name = line.split()
        with open(os.path.join(folder, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name


@pytest.mark.parametrize("split,counts", [("train", TRAIN_COUNTS), ("test", TEST_COUNTS)])
def test_reader_on_the_real_files(mnist_root, split, counts):
    folder, source = D.find_mnist(mnist_root, download=False)
    assert source == "local" and folder == os.path.join(mnist_root, "mnist")
    images, labels = D.load_mnist(folder, split)
    assert images.shape == (sum(counts), 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == counts
    assert images.max() == 255 and images.min() == 0
    # white digits on black: the border is (almost) always empty, the centre is not
    assert images[:, 0, :].mean() < 1 and images[:, 10:18, 10:18].mean() > 60


def test_auto_prefers_real_mnist_and_records_it(mnist_root):
    sets, info = D.load_data("auto", mnist_root, 100, 50, 0, download=False)
    assert info["data"] == "mnist" and info["data_source"] == "local"
    assert sets["train"][0].shape == (100, 28, 28) and sets["test"][1].shape == (50,)
    with pytest.raises(ValueError, match="--train-size 60001 exceeds the 60000"):
        D.load_data("mnist", mnist_root, 60001, 50, 0, download=False)


def test_auto_falls_back_to_synthetic_and_says_so(tmp_path):
    sets, info = D.load_data("auto", str(tmp_path), 6, 4, 0, download=False)
    assert info["data"] == "synthetic" and "MNIST not found" in info["data_note"]
    assert sets["train"][0].shape == (6, 28, 28)


def test_faithful_classifier_structure():
    model = MNISTClassifier()
    kinds = [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    kinds += [nn.Conv2d, nn.ReLU] * 3
    assert [type(m) for m in model.features] == kinds
    for conv in model.convs():
        assert conv.out_channels == 16 and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
        assert conv.bias is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.forward_features(torch.zeros(2, 1, 28, 28)).shape == (2, 16, 7, 7)
    assert model.fc.in_features == 16 and model.fc.out_features == 10
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == (1 * 9 + 1) * 16 + 4 * (16 * 9 + 1) * 16 + 17 * 10


@needs_dcn
@pytest.mark.parametrize("modulation", [True, False])
def test_faithful_classifier_deformable_layers(modulation):
    model = build_model("MNISTClassifier", deform=True, modulation=modulation)
    convs = model.convs()
    assert [isinstance(c, L.DeformConv2d) for c in convs] == [False] * 3 + [True] * 2
    assert all(c.bias is not None for c in convs)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_run_on_real_mnist_records_what_ran(mnist_root, tmp_path):
    out = str(tmp_path / "run")
    argv = ["--arch", "MNISTClassifier", "--epochs", "2", "--train-size", "64", "--test-size"]
    argv += ["20", "--scale-min", "1", "--scale-max", "1", "--data-root", mnist_root]
    argv += ["--out", out, "--threads", "1", "--quiet", "--no-download"]
    T.main(argv)
    args = _load_json(os.path.join(out, "args.json"))
    assert args["data_used"] == "mnist" and args["status"] == "completed"
    assert args["epochs_completed"] == 2 and args["train_size"] == 64
    assert args["modulation"] is None and args["deformable_layers"] == []
    summary = _load_json(os.path.join(out, "summary.json"))
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    for e in summary["epochs"]:
        assert list(e["scale_accuracy"]) == [f"{s:.1f}" for s in D.TEST_SCALES]
        # validation at the fixed training scale is the scale-1.0 column
        assert e["validation/main/accuracy"] == e["scale_accuracy"]["1.0"]
    best = max(summary["epochs"], key=lambda e: e["mean_scale_accuracy"])
    assert summary["best"]["epoch"] == best["epoch"] and summary["final"]["epoch"] == 2


def test_interrupted_run_is_marked(tmp_path, monkeypatch):
    calls = []

    def stop(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 1.0, 0.5

    monkeypatch.setattr(T, "train_epoch", stop)
    out = str(tmp_path / "run")
    argv = ["--epochs", "3", "--train-size", "8", "--test-size", "4", "--data", "synthetic"]
    argv += ["--data-root", str(tmp_path / "d"), "--out", out, "--threads", "1", "--quiet"]
    assert T.cli(argv) == 130
    args = _load_json(os.path.join(out, "args.json"))
    assert args["status"] == "interrupted" and args["epochs_completed"] == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    argv = ["--data", "mnist", "--no-download", "--data-root", str(tmp_path), "--out"]
    assert T.cli(argv + [str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MNIST not found")
