"""The whole detector: every config builds, trains one step and infers on tiny CPU images."""

import glob
import re

import pytest
import torch
from torch import nn

from detection.config import load_config
from detection.modeling import build_detection_model
from detection.structures.bounding_box import BoxList
from detection.structures.image_list import to_image_list

from .conftest import needs_ops, tiny_batch, tiny_cfg

CONFIGS = sorted(glob.glob("configs/**/*.yaml", recursive=True))
LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
MIMIC_LOSSES = {"loss_mimic_cos", "loss_mimic_cls"}


def test_all_shipped_configs_present():
    names = {c.split("configs/")[-1] for c in CONFIGS}
    assert {
        "e2e_deformconv_mask_rcnn_R_50_C5_1x.yaml",
        "e2e_mask_rcnn_R_50_C5_1x.yaml",
        "e2e_dcnv1_mask_rcnn_R_50_C5_1x.yaml",
        "e2e_deformconv_mask_rcnn_R_50_C5_1x_no_mimic.yaml",
        "e2e_deformconv_mask_rcnn_R_50_C5_1x_no_ohem.yaml",
        "shapes/e2e_deformconv_mask_rcnn_shapes.yaml",
        "shapes/e2e_deformconv_mask_rcnn_shapes_10min.yaml",
        "shapes/e2e_deformconv_mask_rcnn_shapes_under10min.yaml",
    } <= names


@needs_ops
@pytest.mark.parametrize("config_file", CONFIGS)
def test_config_builds_at_full_size_on_meta(config_file):
    """Full-size build without allocating memory (meta device): structure and validation."""
    cfg = load_config(config_file, world_size=1)  # `_BASE_` files too
    cfg.defrost()
    with torch.device("meta"):
        model = build_detection_model(cfg)
    assert (model.mimic is not None) == cfg.MODEL.MIMIC_ON
    assert (model.roi_heads.mask_head is not None) == cfg.MODEL.MASK_ON
    import detection.layers as L

    expected = {
        "ModulatedDeformRoIPool": "ModulatedDeformRoIPoolPack",
        "DeformRoIPool": "DeformRoIPoolPack",
        "RoIAlign": "RoIAlign",
    }
    poolers = [(model.roi_heads.box_head.feature_extractor.pooler, "ROI_BOX_HEAD")]
    if model.roi_heads.mask_head is not None:  # box-only configs (VOC) have none
        poolers.append((model.roi_heads.mask_head.head.pooler, "ROI_MASK_HEAD"))
    for pooler, key in poolers:
        assert isinstance(pooler.pool, getattr(L, expected[cfg.MODEL[key].POOLER]))
    assert model.roi_heads.box_head.ohem_per_image == (
        cfg.MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE if cfg.MODEL.ROI_HEADS.OHEM else 0
    )


@needs_ops
def test_paper_config_components():
    import detection.layers as L

    cfg = load_config("configs/e2e_deformconv_mask_rcnn_R_50_C5_1x.yaml", world_size=1)
    with torch.device("meta"):
        model = build_detection_model(cfg)
    bb = model.backbone
    for stage in ("res3", "res4", "res5"):
        for block in getattr(bb, stage):
            assert isinstance(block.conv2, L.ModulatedDeformConv2dPack)
    assert not any(
        isinstance(m, (L.ModulatedDeformConv2dPack, L.DeformConv2d)) for m in bb.res2.modules()
    )
    assert all(isinstance(getattr(b, f"norm{i}"), nn.GroupNorm) for b in bb.res4 for i in (1, 2, 3))
    assert isinstance(
        model.roi_heads.box_head.feature_extractor.pooler.pool, L.ModulatedDeformRoIPoolPack
    )
    assert isinstance(model.roi_heads.mask_head.head.pooler.pool, L.ModulatedDeformRoIPoolPack)
    assert model.roi_heads.box_head.ohem_per_image == 256 and model.mimic is not None
    assert model.roi_heads.reduce_conv.out_channels == 256
    assert len(model.roi_heads.mask_head.head.convs) == 4


def hidden_pool_fc_params(model: nn.Module) -> set:
    """The only parameters allowed an exactly-zero gradient in the first step, by construction.

    The hidden fc layers of a deformable RoI pooling's offset / mask branch (`offset_fc`,
    `mask_fc`: every Linear but the last) sit behind that branch's zero-initialised last fc, so
    no gradient reaches them until it moves. The zero-initialised predictors themselves
    (`conv_offset`, the last Linear of `offset_fc` / `mask_fc`) do get nonzero gradients and are
    checked like every other parameter.
    """
    names = set()
    for mname, mod in model.named_modules():
        if not mname.endswith(("offset_fc", "mask_fc")):
            continue
        linears = [(n, m) for n, m in mod.named_modules() if isinstance(m, nn.Linear)]
        for n, m in linears[:-1]:
            names |= {f"{mname}.{n}.{pn}" for pn, _ in m.named_parameters()}
    return names


def _check_grads(model):
    allowed_zero = hidden_pool_fc_params(model)
    missing, zero = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            missing.append(n)
        elif float(p.grad.abs().sum()) == 0.0 and n not in allowed_zero:
            zero.append(n)
    assert missing == [], missing
    assert zero == [], zero


def _check_detections(out, images, num_classes, masks=True):
    assert isinstance(out, list) and len(out) == len(images)
    for det, img in zip(out, images):
        assert isinstance(det, BoxList)
        assert det.size == (img.shape[2], img.shape[1])
        assert set(det.fields()) >= {"scores", "labels"} | ({"mask"} if masks else set())
        n = len(det)
        if masks:
            assert det.get_field("mask").shape == (n, 1, 28, 28)
            m = det.get_field("mask")
            assert bool(((m >= 0) & (m <= 1)).all())
        else:
            assert "mask" not in det.fields()
        labels = det.get_field("labels")
        assert labels.dtype == torch.int64 and bool(((labels >= 1) & (labels < num_classes)).all())
        b = det.bbox
        assert bool((b[:, 0] >= 0).all() & (b[:, 2] <= img.shape[2]).all())
        assert bool((b[:, 1] >= 0).all() & (b[:, 3] <= img.shape[1]).all())
        s = det.get_field("scores")
        assert bool((s[1:] <= s[:-1]).all())


@needs_ops
@pytest.mark.parametrize("config_file", CONFIGS)
def test_train_step_and_inference(config_file):
    cfg = tiny_cfg(config_file)
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    images, targets = tiny_batch()
    model.train()
    losses = model(images, targets)
    expected = LOSSES | (MIMIC_LOSSES if cfg.MODEL.MIMIC_ON else set())
    expected -= set() if cfg.MODEL.MASK_ON else {"loss_mask"}
    assert set(losses) == expected
    for k, v in losses.items():
        assert v.ndim == 0 and bool(torch.isfinite(v)), k
    sum(losses.values()).backward()
    _check_grads(model)
    model.eval()
    with torch.no_grad():
        out = model(to_image_list(images, 16))
    _check_detections(out, images, cfg.MODEL.ROI_HEADS.NUM_CLASSES, masks=cfg.MODEL.MASK_ON)


@needs_ops
def test_images_without_any_ground_truth_still_give_every_loss():
    cfg = tiny_cfg()
    model = build_detection_model(cfg).train()
    images, targets = tiny_batch()
    losses = model([images[1]], [targets[1]])
    assert set(losses) == LOSSES | MIMIC_LOSSES
    for k in ("loss_rpn_box_reg", "loss_box_reg", "loss_mask", "loss_mimic_cos", "loss_mimic_cls"):
        assert float(losses[k].detach()) == 0.0, k
    sum(losses.values()).backward()
    # zero losses are still connected: every head parameter has a (zero) gradient
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@needs_ops
def test_frozen_stages_get_no_gradient():
    cfg = tiny_cfg()
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2
    model = build_detection_model(cfg).train()
    images, targets = tiny_batch()
    sum(model(images, targets).values()).backward()
    for n, p in model.backbone.named_parameters():
        frozen = n.startswith(("stem.", "res2."))
        assert p.requires_grad != frozen, n
        assert (p.grad is None) == frozen, n


@pytest.mark.parametrize(
    "overrides, key",
    [
        (
            ["MODEL.RPN_ONLY", True, "MODEL.MASK_ON", False, "MODEL.MIMIC_ON", True],
            "MODEL.MIMIC_ON",
        ),
        (["MODEL.RPN_ONLY", True], "MODEL.MASK_ON"),
        (["MODEL.ROI_BOX_HEAD.POOLER", "PSRoIPool"], "MODEL.ROI_BOX_HEAD.POOLER"),
        (["MODEL.ROI_MASK_HEAD.POOLER", "RoIPool"], "MODEL.ROI_MASK_HEAD.POOLER"),
        (["MODEL.ROI_MASK_HEAD.RESOLUTION", 32], "MODEL.ROI_MASK_HEAD.RESOLUTION"),
        (
            ["MODEL.ROI_HEADS.OHEM", True, "MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE", 0],
            "OHEM_BATCH_SIZE_PER_IMAGE",
        ),
        (["MODEL.RPN.ANCHOR_STRIDE", 32], "MODEL.RPN.ANCHOR_STRIDE"),
        (["MODEL.MIMIC_ON", True, "MODEL.MIMIC.CROP_SIZE", 8], "MODEL.MIMIC.CROP_SIZE"),
        (["MODEL.META_ARCHITECTURE", "RetinaNet"], "MODEL.META_ARCHITECTURE"),
    ],
)
def test_invalid_combinations_name_the_key(overrides, key):
    cfg = tiny_cfg()
    # a plain backbone so these checks run without the compiled ops
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.STAGE_WITH_DCN",
            (False, False, False, False),
            "MODEL.ROI_BOX_HEAD.POOLER",
            "RoIAlign",
            "MODEL.ROI_MASK_HEAD.POOLER",
            "RoIAlign",
        ]
    )
    cfg.merge_from_list(overrides)
    with pytest.raises(ValueError, match=re.escape(key)):
        build_detection_model(cfg)


@needs_ops
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_step_keeps_float32_losses_and_boxes(dtype):
    """The ops' autocast rules are registered for CUDA; boxes, scores, masks and losses stay
    float32 (RoI coordinates are never rounded to 16-bit)."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_detection_model(cfg).cuda().train()
    images, targets = tiny_batch()
    images = [i.cuda() for i in images]
    targets = [t.to("cuda") for t in targets]
    with torch.autocast("cuda", dtype=dtype):
        losses = model(images, targets)
    for k, v in losses.items():
        assert v.dtype == torch.float32 and bool(torch.isfinite(v)), k
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        out = model(images)
    for det in out:
        assert det.bbox.dtype == torch.float32
        assert det.get_field("scores").dtype == torch.float32
        assert det.get_field("mask").dtype == torch.float32


@needs_ops
def test_heads_with_no_proposals_and_no_ground_truth():
    """An image whose RPN returned nothing and that has no ground truth: zero RoIs end to end."""
    cfg = tiny_cfg()
    model = build_detection_model(cfg).train()
    images, targets = tiny_batch()
    img = to_image_list([images[1]], 16)
    features = model.backbone(img.tensors)
    reduced = model.roi_heads.reduce(features)
    empty = BoxList(torch.zeros(0, 4), (96, 80))
    box_head, mask_head = model.roi_heads.box_head, model.roi_heads.mask_head
    rois, losses = box_head(reduced, [empty], [targets[1]])
    assert len(rois[0]) == 0 and rois[0].get_field("box_features").shape[0] == 0
    _, mask_losses = mask_head(reduced, rois, [targets[1]])
    mimic = model.mimic(img.tensors, rois, model.crop_features)
    total = {**losses, **mask_losses, **mimic}
    assert set(total) == {"loss_classifier", "loss_box_reg", "loss_mask"} | MIMIC_LOSSES
    assert all(float(v.detach()) == 0.0 for v in total.values())
    sum(total.values()).backward()
    assert box_head.predictor.cls_score.weight.grad is not None
    assert mask_head.head.logits.weight.grad is not None
    model.eval()
    with torch.no_grad():
        dets, _ = box_head(reduced, [empty])
        (det,), _ = mask_head(reduced, dets)
    assert len(det) == 0 and det.get_field("mask").shape == (0, 1, 28, 28)
