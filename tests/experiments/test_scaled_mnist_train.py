"""One short Scaled-MNIST training run per setting writes its table, CSVs, plot and checkpoint."""

import csv
import json
import os

import pytest
import torch

from detection._ext import HAS_OPS
from detection.experiments.scaled_mnist import train as T
from detection.experiments.scaled_mnist.data import TEST_SCALES
import detection.layers as L

needs_dcn = pytest.mark.skipif(
    not (HAS_OPS and hasattr(L, "DeformConv2d")),
    reason="needs detection.layers.DeformConv2d and the compiled ops",
)


def _run(tmp_path, *extra):
    out = str(tmp_path / "run")
    argv = [
        "--epochs",
        "1",
        "--train-size",
        "64",
        "--test-size",
        "32",
        "--batch-size",
        "32",
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        out,
        "--threads",
        "1",
        "--data",
        "synthetic",
        *extra,
    ]
    return T.main(argv), out


def _check_outputs(out, result):
    with open(os.path.join(out, "log.csv")) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == T.LOG_COLUMNS and len(rows) == 2 and rows[1][0] == "1"
    assert all(float(v) >= 0 for v in rows[1][1:])
    with open(os.path.join(out, "scale_accuracy.csv")) as f:
        srows = list(csv.DictReader(f))
    assert [float(r["scale"]) for r in srows] == list(TEST_SCALES)
    assert all(0 <= float(r["accuracy"]) <= 1 for r in srows)
    assert [float(r["accuracy"]) for r in srows] == pytest.approx(
        list(result["scale_accuracy"].values())
    )
    assert os.path.getsize(os.path.join(out, "learning_curves.png")) > 1000
    model, args = T.load_checkpoint(out)
    assert args["epochs"] == 1 and json.load(open(os.path.join(out, "args.json")))["out"] == out
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    return args


def test_one_epoch_regular(tmp_path, capsys):
    result, out = _run(tmp_path, "--arch", "ScaledMNISTNet")
    args = _check_outputs(out, result)
    assert T.run_label(args) == "regular"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == list(T.LOG_COLUMNS)  # the per-epoch table
    assert printed[1].split()[0] == "1" and sum(line.startswith("scale ") for line in printed) == 11


@needs_dcn
def test_one_epoch_dcnv2(tmp_path):
    result, out = _run(
        tmp_path, "--arch", "MNISTClassifier", "--deform", "True", "--modulation", "True", "--quiet"
    )
    args = _check_outputs(out, result)
    assert T.run_label(args) == "DCNv2"
    model, _ = T.load_checkpoint(out)
    # the offset predictors received updates (they start at zero)
    moved = [p.abs().sum().item() for n, p in model.named_parameters() if "conv_offset" in n]
    assert moved and max(moved) > 0


def test_cli_checks_arguments(tmp_path, capsys):
    needles = ("--epochs", "--scale-min", "True or False")
    bads = (["--epochs", "0"], ["--scale-min", "2", "--scale-max", "1"], ["--deform", "maybe"])
    for bad, needle in zip(bads, needles):
        assert T.cli(bad + ["--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
