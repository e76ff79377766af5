"""tools/export.py: the backbone to ONNX end to end, and bad input."""

import os
import re

import pytest
import torch
from torch import nn

from detection import HAS_OPS
from testutils.tools import CONFIG, load_tool

needs_ops = pytest.mark.skipif(not HAS_OPS, reason="needs the compiled detection ops")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A state dict of the tiny shapes model whose offset predictors give offsets of pixels."""
    from detection.config import load_config
    from detection.modeling import build_detection_model

    torch.manual_seed(0)
    model = build_detection_model(load_config(CONFIG, world_size=1))
    for name, module in model.named_modules():
        if name.endswith("conv_offset"):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.normal_(module.bias, std=0.5)
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pth")
    torch.save(model.state_dict(), path)
    return path


@needs_ops
@pytest.mark.slow
def test_export_backbone_onnx(ckpt, tmp_path, capsys):
    pytest.importorskip("onnxscript", reason="ONNX export needs the deploy extra (onnxscript)")
    pytest.importorskip("onnxruntime", reason="the parity check needs the deploy extra")
    out = str(tmp_path / "backbone.onnx")
    argv = ["--config", CONFIG, "--ckpt", ckpt, "--format", "onnx", "--output", out]
    assert load_tool("export").main(argv + ["--part", "backbone", "MODEL.DEVICE", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert os.path.isfile(out)
    assert "onnx.checker passed" in printed
    assert re.search(r"^ops: .*\bDeformConv\b", printed, re.M)
    diffs = [float(d) for d in re.findall(r"max abs difference (\S+)", printed)]
    assert len(diffs) == 4 and max(diffs) < 1e-3, printed  # two outputs, two image sizes


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--format", "tflite", "--output", "m.onnx"], "--format"),
        # torch-export: no optional package needed (onnx would first ask for the deploy extra)
        (["--format", "torch-export", "--output", "/no/such/folder/m.pt2"], "--output"),
    ],
)
def test_export_bad_arguments(tmp_path, capsys, extra, needle):
    argv = ["--config", CONFIG, "--ckpt", str(tmp_path / "x.pth")] + extra
    assert load_tool("export").main(argv + ["MODEL.DEVICE", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
