"""The tools and benchmark scripts as importable modules, and the tiny shapes run the tool and
fault tests share."""

import importlib
import importlib.util
import os

from detection import HAS_OPS
import detection.layers as L
from testutils import ROOT

CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes_tiny.yaml")
OPS_READY = HAS_OPS and all(
    hasattr(L, n) for n in ("ModulatedDeformConv2dPack", "ModulatedDeformRoIPoolPack", "nms")
)

# a few iterations of the tiny shapes config on a tiny generated set
TINY = [
    "MODEL.DEVICE",
    "cpu",
    "DATASETS.SHAPES.NUM_TRAIN",
    "8",
    "DATASETS.SHAPES.NUM_VAL",
    "4",
    "MODEL.ROI_HEADS.SCORE_THRESH",
    "0.0",
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMG",
    "10",
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.CHECKPOINT_PERIOD",
    "1",
    "SOLVER.CHECKPOINT_KEEP",
    "2",
    "SOLVER.SAVE_PERIOD",
    "2",
    "SOLVER.LOG_PERIOD",
    "1",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.STEPS",
    "(3,)",
    "TEST.IMS_PER_BATCH",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DETERMINISTIC",
    "True",
]


def load_tool(name: str):
    """`tools/<name>.py` as the module `tools.<name>` (its `main(argv)` runs the tool)."""
    return importlib.import_module(f"tools.{name}")


def load_benchmark(name: str):
    """`benchmarks/<name>.py` loaded from its file as the module `<name>` (the scripts are not a
    package: each puts `benchmarks/` on sys.path itself)."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "benchmarks", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
