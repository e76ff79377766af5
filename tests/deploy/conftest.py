"""Fixtures of the deployment tests: the tiny shapes model and its detector exported to ONNX
once per session (the dynamo exporter takes tens of seconds)."""

import copy
import os

import pytest
import torch
from torch import nn

from detection import HAS_OPS
from testutils import ROOT
from testutils.deploy import ROLES, Counter, image, role_image

CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes_tiny.yaml")


@pytest.fixture(scope="session")
def tiny_cfg():
    from detection.config import load_config

    return load_config(CONFIG, world_size=1)


@pytest.fixture(scope="session")
def model(tiny_cfg):
    """The tiny shapes model, eval mode, with offset predictors that give offsets of a few
    pixels (at initialisation they are zero, which would leave the deformation untested)."""
    if not HAS_OPS:
        pytest.skip("needs the compiled detection ops")
    from detection.modeling import build_detection_model

    torch.manual_seed(0)
    m = build_detection_model(tiny_cfg).eval()
    for name, module in m.named_modules():
        if name.endswith("conv_offset"):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.normal_(module.bias, std=0.5)
    return m


@pytest.fixture(scope="session")
def detector_onnx(model, tiny_cfg, tmp_path_factory):
    """The tiny detector exported once to ONNX with a dynamic H, W (at a size that is no multiple
    of SIZE_DIVISIBILITY 16) and the metadata of tools/export.py, with RPN.MIN_SIZE 50 (an
    image under 50 px then has no proposal) and the score threshold between the best scores of
    the "none" image and the others (testutils.deploy.ROLES): (DetectorForExport, path, Counter,
    model)."""
    pytest.importorskip("onnxscript", reason="ONNX export needs the deploy extra (onnxscript)")
    pytest.importorskip("onnxruntime", reason="the parity check needs the deploy extra")
    from detection.deploy.export_model import DetectorForExport
    from detection.deploy.onnx_export import check_onnx, export_onnx, write_metadata
    from detection.deploy.runtime import OUTPUT_NAMES, export_metadata

    m = copy.deepcopy(model)
    m.rpn.post_processor_test.min_size = 50
    module = DetectorForExport(m, size_divisible=tiny_cfg.DATALOADER.SIZE_DIVISIBILITY)
    counter = Counter(module)
    post = m.roi_heads.box_head.post_processor
    post.score_thresh = 0.0
    best = {k: counter(role_image(k))[2][1].max().item() for k in ROLES if k != "empty"}
    lowest = min(v for k, v in best.items() if k != "none")
    assert best["none"] < lowest, best  # the seeds are chosen so; if not, pick others
    post.score_thresh = (best["none"] + lowest) / 2
    path = str(tmp_path_factory.mktemp("onnx") / "detector.onnx")
    export_onnx(module, image(59, 90), path, OUTPUT_NAMES, dynamic=True)
    n = tiny_cfg.MODEL.ROI_HEADS.NUM_CLASSES
    names = {k: f"class {k}" for k in range(1, n)}
    write_metadata(path, export_metadata(tiny_cfg, names, {k: k for k in names}))
    check_onnx(path)
    return module, path, counter, m
