"""Tracing of deformable sampling points, input gradients, and the visualisation/plot tools."""

import os
import runpy
import sys

import numpy as np
import pytest
import torch

from detection._ext import HAS_OPS
from detection.experiments import visualize as V
import detection.layers as L

needs_dcn = pytest.mark.skipif(
    not (HAS_OPS and hasattr(L, "DeformConv2d")),
    reason="needs detection.layers.DeformConv2d and the compiled ops",
)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _layer(hw, offset=None, mask=None):
    return V.DeformSampling(
        offset=torch.zeros(18, *hw) if offset is None else offset,
        mask=mask,
        in_hw=hw,
        out_hw=hw,
        stride=(1, 1),
        padding=(1, 1),
        dilation=(1, 1),
        kernel_size=(3, 3),
    )


def test_fixed_grid_geometry():
    # Two 3x3 layers on a 7x7 map of a 28x28 image (stride 4: map pixel u is image pixel 4u + 1.5).
    layers = [_layer((7, 7)), _layer((7, 7))]
    unit, levels = V.trace_sampling_points(layers, None, (28, 28))
    assert unit == (3, 3)
    pts, w = levels[0]
    assert pts.shape == (9, 2) and np.all(w == 1)
    expected = [4 * u + 1.5 for u in (2, 3, 4)]
    assert sorted(set(pts[:, 0])) == expected and sorted(set(pts[:, 1])) == expected
    pts2, _ = levels[1]
    assert pts2.shape == (81, 2)
    assert sorted(set(pts2[:, 0])) == [4 * u + 1.5 for u in range(1, 6)]
    # a position given in image pixels picks the nearest unit
    unit, _ = V.trace_sampling_points(layers, (5.0, 22.0), (28, 28))
    assert unit == (1, 5)


def test_offsets_and_masks_move_and_weight_points():
    off = torch.zeros(18, 7, 7)
    off[0::2] = 0.5  # every kernel point moves half a map pixel down (= 2 image pixels)
    mask = torch.full((9, 7, 7), 0.5)
    layers = [_layer((14, 14)), _layer((7, 7), off, mask)]
    _, fixed = V.trace_sampling_points(layers, None, (28, 28), zero_offsets=True)
    _, moved = V.trace_sampling_points(layers, None, (28, 28))
    np.testing.assert_allclose(moved[0][0][:, 0], fixed[0][0][:, 0] + 2.0)
    np.testing.assert_allclose(moved[0][0][:, 1], fixed[0][0][:, 1])
    np.testing.assert_allclose(moved[0][1], 0.5)
    # depth 2 runs through a 2x pool: the 14x14 map has stride 2 (pixel u -> 2u + 0.5)
    assert moved[1][0].shape == (81, 2) and np.all(moved[1][1] == 0.5)
    # each depth-1 point y1 (a 7x7 pixel centre = the middle of a 2x2 block of 14x14 pixels) is
    # surrounded by a 3x3 grid with the 14x14 map's spacing of 2 image pixels
    y1 = sorted(set(fixed[0][0][:, 0]))
    assert sorted(set(fixed[1][0][:, 0])) == sorted({y + 2 * d for y in y1 for d in (-1, 0, 1)})
    with pytest.raises(ValueError, match="no deformable layers"):
        V.trace_sampling_points([], None, (28, 28))


@needs_dcn
def test_capture_matches_predictor_and_gradients():
    from detection.experiments.scaled_mnist.models import build_model

    torch.manual_seed(0)
    model = build_model("MNISTClassifier", deform=True, modulation=True).eval()
    for _, m in model.named_modules():
        if hasattr(m, "conv_offset"):
            torch.nn.init.normal_(m.conv_offset.weight, std=0.1)
    x = torch.randn(1, 1, 28, 28)
    layers = V.capture_sampling(model, x)
    assert (
        len(layers) == 2
        and layers[0].offset.shape == (18, 7, 7)
        and layers[0].mask.shape == (9, 7, 7)
    )
    assert [layer.source for layer in layers] == ["op", "op"]  # read from the op's arguments
    # the captured offsets are the Pack convention applied to the predictor's output
    feats = {}
    hook = model.convs()[3].register_forward_hook(lambda m, i, o: feats.setdefault("in", i[0]))
    model(x)
    hook.remove()
    off, mask = V._from_predictor(model.convs()[3], feats["in"])
    torch.testing.assert_close(layers[0].offset, off[0].detach())
    torch.testing.assert_close(layers[0].mask, mask[0].detach())
    assert layers[0].offset.abs().max() > 0
    grads = V.input_gradients(model, x)
    assert grads["unit"].shape == (28, 28) and grads["logit"].shape == (28, 28)
    assert grads["unit"].max() > 0 and 0 <= int(grads["pred"]) <= 9


@needs_dcn
def test_sampling_spread_of_untrained_model_is_the_fixed_grid():
    import itertools

    from detection.experiments.scaled_mnist.models import build_model

    model = build_model("MNISTClassifier", deform=True, modulation=True)  # zero offsets, mask 0.5
    spread, fixed = V.sampling_spread(model, torch.randn(3, 1, 28, 28))
    # conv4 and conv5 on the 7x7 map: every depth-2 point is 4 * (a + b) pixels away per axis
    d = [4 * (a + b) for a, b in itertools.product((-1, 0, 1), repeat=2)]
    expected = np.mean([np.hypot(dy, dx) for dy in d for dx in d])
    assert fixed == pytest.approx(expected)
    np.testing.assert_allclose(spread, expected, rtol=1e-6)


@needs_dcn
def test_tools_write_pngs(tmp_path, monkeypatch, capsys):
    from detection.experiments.scaled_mnist import train as T

    common = [
        "--epochs",
        "1",
        "--train-size",
        "64",
        "--test-size",
        "16",
        "--quiet",
        "--arch",
        "MNISTClassifier",
        "--data-root",
        str(tmp_path / "data"),
        "--threads",
        "1",
        "--data",
        "synthetic",
    ]
    T.main(common + ["--deform", "True", "--out", str(tmp_path / "dcn")])
    T.main(common + ["--deform", "False", "--out", str(tmp_path / "reg")])
    out = tmp_path / "vis"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "visualize_dcn.py",
            "--run",
            str(tmp_path / "dcn"),
            "--compare-run",
            str(tmp_path / "reg"),
            "--image",
            "3",
            "--scale",
            "0.6",
            "1.2",
            "--out",
            str(out),
            "--spread-images",
            "4",
            "--threads",
            "1",
        ],
    )
    runpy.run_path(os.path.join(ROOT, "tools", "visualize_dcn.py"), run_name="__main__")
    for name in ("sampling_locations.png", "gradients.png", "spread.png"):
        assert (out / name).stat().st_size > 2000
    rows = (out / "spread.csv").read_text().split()
    assert rows[0] == "scale,DCNv2,fixed_grid" and len(rows) == 12
    png = tmp_path / "plot.png"
    monkeypatch.setattr(
        sys,
        "argv",
        ["plot_scaled_mnist.py", str(tmp_path / "reg"), str(tmp_path / "dcn"), "--out", str(png)],
    )
    runpy.run_path(os.path.join(ROOT, "tools", "plot_scaled_mnist.py"), run_name="__main__")
    assert png.stat().st_size > 2000
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # one `error:` line, exit status 2
        monkeypatch.setattr(
            sys, "argv", ["visualize_dcn.py", "--run", str(tmp_path / "reg"), "--out", str(out)]
        )
        runpy.run_path(os.path.join(ROOT, "tools", "visualize_dcn.py"), run_name="__main__")
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: --run must be a deformable model")


def test_plot_table_averages_runs_with_the_same_label():
    tool = runpy.run_path(os.path.join(ROOT, "tools", "plot_scaled_mnist.py"), run_name="plot")
    table = tool["markdown_table"](
        ["a", "b"], [0.5, 1.0], [[[0.5, 1.0], [0.7, 0.9]], [[0.25, 1.0]]]
    )
    lines = table.splitlines()
    assert lines[0] == "| scale | a (n=2) | b |"
    assert lines[2] == "| 0.5 | 60.00 (50.00-70.00) | 25.00 |"
    assert lines[3] == "| 1.0 | 95.00 (90.00-100.00) | 100.00 |"
    assert lines[4] == "| mean | 77.50 (75.00-80.00) | 62.50 |"
    label = tool["describe"](
        {
            "arch": "ScaledMNISTNet",
            "deform": True,
            "modulation": False,
            "min_deform_layer": None,
            "scale_min": 1.0,
            "scale_max": 1.0,
        }
    )
    assert label == "DCNv1 (ScaledMNISTNet, deformable from conv3, train scale 1 only)"
