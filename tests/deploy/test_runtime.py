"""The exported detector run by the tools through onnxruntime (`detection.deploy.runtime`):
tools/infer.py without the compiled ops or the model code, tools/test.py's COCO evaluation,
and bad input (docs/deployment.md)."""

import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from testutils import ROOT
from testutils.tools import CONFIG, TINY, load_tool

# Runs a tool with the compiled ops and the model/training code made unimportable: an import
# hook refuses the modules, torch.ops.load_library refuses the library; after the tool, checks
# that none of them was loaded.
BLOCKED = (
    "detection._C",
    "detection.modeling",
    "detection.solver",
    "detection.engine.trainer",
    "detection.engine.train_loop",
)
RUN_BLOCKED = r"""
import importlib.abc, runpy, sys
BLOCKED = %r
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(BLOCKED):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Refuse())
import torch
def refuse_library(path):
    raise OSError(f"{path}: loading compiled libraries is blocked in this test")
torch.ops.load_library = refuse_library
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    status = e.code
import detection
loaded = sorted(m for m in sys.modules if m.startswith(BLOCKED))
print(f"HAS_OPS {detection.HAS_OPS} blocked-loaded {loaded}")
sys.exit(status)
""" % (BLOCKED,)


@pytest.fixture(autouse=True)
def _restore_logging():
    """The tools configure the "detection" logger: undone after each test."""
    logger = logging.getLogger("detection")
    state = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for handler in list(logger.handlers):
        if handler not in state[0]:
            logger.removeHandler(handler)
    logger.propagate, logger.level = state[1], state[2]


def _write_images(folder, sizes) -> list[str]:
    """Random BGR images with a few filled shapes, as PNG files."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        for _ in range(3):
            x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            colour = tuple(int(c) for c in rng.integers(100, 256, size=3))
            cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 40)), y + 25), colour, -1)
        paths.append(os.path.join(folder, f"img{i}.png"))
        cv2.imwrite(paths[-1], img)
    return paths


@pytest.mark.slow
def test_infer_onnxruntime_needs_no_ops_and_no_model_code(detector_onnx, tiny_cfg, tmp_path):
    """tools/infer.py --backend onnxruntime in a process where the compiled ops and the model
    code cannot load gives the PyTorch predictor's detections (boxes in original pixels, scores,
    labels, pasted masks) on images of several sizes."""
    from detection.data.transforms import build_transforms
    from detection.engine.coco_eval import encode_masks
    from detection.engine.predictor import Predictor

    _, path, _, model = detector_onnx
    images = _write_images(str(tmp_path / "in"), [(90, 130), (120, 80), (77, 101)])
    out = str(tmp_path / "out")
    cmd = [sys.executable, "-c", RUN_BLOCKED, os.path.join(ROOT, "tools", "infer.py")]
    cmd += ["--backend", "onnxruntime", "--model", path, "--input", str(tmp_path / "in")]
    cmd += ["--output", out, "--score-threshold", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HAS_OPS False blocked-loaded []" in proc.stdout, proc.stdout
    with open(os.path.join(out, "detections.json")) as f:
        written = json.load(f)
    predictor = Predictor(
        model,
        torch.device("cpu"),
        build_transforms(tiny_cfg, is_train=False),
        size_divisible=tiny_cfg.DATALOADER.SIZE_DIVISIBILITY,
        mask_threshold=tiny_cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD,
    )
    total = 0
    for image_id, p in enumerate(images, 1):
        expected = predictor(cv2.imread(p))
        got = [a for a in written["annotations"] if a["image_id"] == image_id]
        assert len(got) == len(expected), p
        total += len(got)
        boxes = expected.convert("xywh").bbox
        rles = encode_masks(expected.get_field("mask"))
        for k, a in enumerate(got):
            assert a["category_id"] == int(expected.get_field("labels")[k])
            np.testing.assert_allclose(a["bbox"], boxes[k].tolist(), atol=0.011)  # 2 decimals
            assert abs(a["score"] - expected.get_field("scores")[k].item()) < 1e-4 + 5e-5
            assert a["segmentation"]["counts"] == rles[k]["counts"]
        assert os.path.isfile(os.path.join(out, f"img{image_id - 1}.png"))
    assert total > 0


@pytest.mark.slow
def test_test_tool_onnxruntime_gives_pytorchs_ap(detector_onnx, tmp_path):
    """tools/test.py --backend onnxruntime on a tiny generated shapes set: the same bbox and segm
    AP as tools/test.py with the PyTorch model (one image per batch, the same thresholds)."""
    _, path, _, model = detector_onnx
    ckpt = str(tmp_path / "model.pth")
    torch.save(model.state_dict(), ckpt)
    thresh = model.roi_heads.box_head.post_processor.score_thresh
    opts = TINY + ["DATASETS.ROOT", str(tmp_path / "data"), "TEST.IMS_PER_BATCH", "1"]
    opts += ["MODEL.RPN.MIN_SIZE", "50", "MODEL.ROI_HEADS.SCORE_THRESH", repr(thresh)]
    test = load_tool("test")
    ws = {b: str(tmp_path / b) for b in ("pytorch", "onnxruntime")}
    argv = ["--config", CONFIG, "--no-progress"]
    assert test.main(argv + ["--ckpt", ckpt] + opts + ["WORKSPACE", ws["pytorch"]]) == 0
    onnx_argv = argv + ["--backend", "onnxruntime", "--model", path]
    assert test.main(onnx_argv + opts + ["WORKSPACE", ws["onnxruntime"]]) == 0
    metrics = {}
    for b, w in ws.items():
        with open(os.path.join(w, "inference", "shapes_val", "metrics.json")) as f:
            metrics[b] = json.load(f)
    for iou_type in ("bbox", "segm"):
        a, b = metrics["pytorch"][iou_type], metrics["onnxruntime"][iou_type]
        assert a.keys() == b.keys()
        for key in a:
            assert abs(a[key] - b[key]) < 1e-6, (iou_type, key, a[key], b[key])


@pytest.mark.parametrize(
    "argv,needle",
    [
        ("--backend onnxruntime --input x --output y", "--model"),
        ("--backend onnxruntime --model m.onnx --ckpt c --input x --output y", "--ckpt"),
        ("--model m.onnx --input x --output y", "--config"),
        ("--backend onnxruntime --model NOFILE --input x --output y", "--model"),
        ("--backend onnxruntime --model NOTONNX --input IMG --output y", "--model"),
    ],
)
def test_infer_onnxruntime_bad_arguments(tmp_path, capsys, argv, needle):
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs the deploy extra")
    not_onnx = tmp_path / "not.onnx"
    not_onnx.write_bytes(b"this is no ONNX file")
    image = _write_images(str(tmp_path / "in"), [(40, 40)])[0]
    swap = {"NOFILE": str(tmp_path / "none.onnx"), "NOTONNX": str(not_onnx), "IMG": image}
    argv = [swap.get(a, a) for a in argv.split()]
    assert load_tool("infer").main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_test_tool_onnxruntime_refuses_other_preprocessing(detector_onnx, tmp_path, capsys):
    """A file exported with another INPUT.MIN_SIZE_TEST than the config's: one error line."""
    _, path, _, _ = detector_onnx
    argv = ["--config", CONFIG, "--backend", "onnxruntime", "--model", path]
    argv += ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "80", "WORKSPACE", str(tmp_path)]
    assert load_tool("test").main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "INPUT.MIN_SIZE_TEST" in err[0] and "--model" in err[0], err
