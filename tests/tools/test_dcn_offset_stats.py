"""tools/dcn_offset_stats.py: zero offsets and modulation 0.5 (DCNv2) or 1 (DCNv1) at init, the
offset a predictor's bias sets, and one error line for a missing checkpoint."""

import os

import pytest
import torch

from detection.config import load_config
from detection.modeling import build_detection_model
from testutils import ROOT
from testutils.tools import OPS_READY, load_tool

pytestmark = pytest.mark.skipif(not OPS_READY, reason="needs the compiled detection ops")
CONFIGS = os.path.join(ROOT, "configs", "mnist_det")


def _model(name):
    cfg = load_config(os.path.join(CONFIGS, f"e2e_mask_rcnn_mnist_det_{name}.yaml"), world_size=1)
    torch.manual_seed(0)
    return build_detection_model(cfg)


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, 96, 128, generator=g) * 40]


@pytest.mark.parametrize("name,mask", [("3_dcnv2", 0.5), ("2_dcnv1", 1.0)])
def test_at_init_and_with_a_set_offset(name, mask):
    tool = load_tool("dcn_offset_stats")
    model = _model(name)
    stats = tool.offset_stats(model, _images())
    deformable = [
        n for n, m in model.named_modules() if getattr(m, "conv_offset", None) is not None
    ]
    assert sorted(s["layer"] for s in stats) == sorted(deformable) and len(stats) >= 3
    for s in stats:
        assert s["abs_mean"] == 0 and s["abs_p99"] == 0 and s["mask_mean"] == pytest.approx(mask)
    layer = model.get_submodule(stats[-1]["layer"]).conv_offset
    k = layer.out_channels // (3 if mask == 0.5 else 2)  # offsets are the first 2k channels
    with torch.no_grad():
        layer.bias[: 2 * k] = -0.75
    again = tool.offset_stats(model, _images())
    assert again[-1]["abs_mean"] == pytest.approx(0.75) and again[-1]["abs_p99"] == pytest.approx(
        0.75
    )
    assert [s["abs_mean"] for s in again[:-1]] == [0] * (len(again) - 1)


def test_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    argv = ["--config", os.path.join(CONFIGS, "e2e_mask_rcnn_mnist_det_3_dcnv2.yaml")]
    argv += ["--ckpt", str(tmp_path / "none.pth")]
    assert load_tool("dcn_offset_stats").main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "none.pth" in err[0]
