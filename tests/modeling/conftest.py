"""Helpers shared by the modeling tests."""

import pytest

from detection import HAS_OPS
import detection.layers as L

# The deformable conv / RoI pooling modules and NMS come with the compiled library.
OPS_READY = HAS_OPS and all(
    hasattr(L, n)
    for n in (
        "ModulatedDeformConv2dPack",
        "DeformConv2d",
        "ModulatedDeformRoIPoolPack",
        "DeformRoIPoolPack",
        "RoIAlign",
        "nms",
        "batched_nms",
    )
)
needs_ops = pytest.mark.skipif(not OPS_READY, reason="needs the compiled detection ops")


@pytest.fixture(autouse=True)
def _one_thread():
    """Run these small-tensor tests on one intra-op thread, restored afterwards.

    On a busy shared machine, OpenMP synchronisation across threads makes tiny convolutions
    orders of magnitude slower than on a single thread; results do not depend on it.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(config_file: str = "configs/shapes/e2e_deformconv_mask_rcnn_shapes.yaml"):
    """`config_file` with narrow widths and few RoIs so one CPU step takes well under a second.

    The structure (depth, deformable stages, poolers, norm, OHEM, mimicking) is the file's.
    """
    from detection.config import load_config

    cfg = load_config(config_file, world_size=1)  # `_BASE_` files too
    cfg.defrost()
    bottleneck = not cfg.MODEL.BACKBONE.CONV_BODY.startswith(("R-18", "R-34"))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            8,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            16 if bottleneck else 8,
            "MODEL.RESNETS.WIDTH_PER_GROUP",
            4 if bottleneck else 8,
            "MODEL.GROUP_NORM.NUM_GROUPS",
            4,
            "MODEL.RPN.ANCHOR_SIZES",
            (16, 32, 64, 96, 128),
            "MODEL.RPN.HEAD_CHANNELS",
            16,
            "MODEL.RPN.PRE_NMS_TOP_N_TRAIN",
            300,
            "MODEL.RPN.POST_NMS_TOP_N_TRAIN",
            50,
            "MODEL.RPN.PRE_NMS_TOP_N_TEST",
            300,
            "MODEL.RPN.POST_NMS_TOP_N_TEST",
            30,
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
            64,
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
            32,
            "MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE",
            16,
            "MODEL.ROI_HEADS.NUM_CLASSES",
            4,
            "MODEL.ROI_HEADS.SCORE_THRESH",
            0.0,
            "MODEL.ROI_HEADS.DETECTIONS_PER_IMG",
            10,
            "MODEL.ROI_BOX_HEAD.REDUCE_CHANNELS",
            16,
            "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM",
            32,
            "MODEL.ROI_BOX_HEAD.DEFORM_FC_CHANNELS",
            16,
            "MODEL.ROI_MASK_HEAD.DEFORM_FC_CHANNELS",
            16,
            "MODEL.ROI_MASK_HEAD.CONV_LAYERS",
            (8,),
            "MODEL.MIMIC.NUM_PER_IMAGE",
            4,
            "MODEL.MIMIC.CROP_SIZE",
            32,
            "DATALOADER.SIZE_DIVISIBILITY",
            16,
        ]
    )
    return cfg


def make_target(size_wh, boxes, labels):
    """A training target BoxList with "labels" and rectangle polygon "masks"."""
    import torch

    from detection.structures.bounding_box import BoxList
    from detection.structures.segmentation_mask import SegmentationMask

    t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size_wh)
    t.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    polys = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes]
    t.add_field("masks", SegmentationMask(polys, size_wh, mode="poly"))
    return t


def tiny_batch(seed: int = 0):
    """Two small images (the second without ground truth) and their targets."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(3, 96, 128, generator=g) * 40, torch.randn(3, 80, 96, generator=g) * 40]
    images[0][:, 10:70, 10:60] += 60.0  # something for the detector to find
    targets = [
        make_target((128, 96), [[10, 10, 60, 70], [70, 20, 120, 90]], [1, 3]),
        make_target((96, 80), [], []),
    ]
    return images, targets
