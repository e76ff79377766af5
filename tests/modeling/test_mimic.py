"""Feature mimicking: crop geometry, RoI selection and the two losses."""

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from detection.modeling.roi_heads.mimic import (
    FeatureMimic,
    crop_and_resize_images,
    select_mimic_rois,
)
from detection.modeling.roi_heads.roi_heads import ROIHeads
from detection.structures.bounding_box import BoxList


def test_full_image_crop_is_identity_and_half_crop_matches_interpolate():
    torch.manual_seed(0)
    img = torch.randn(2, 3, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    out = crop_and_resize_images(img, boxes, torch.tensor([1, 0]), 8)
    torch.testing.assert_close(out, img.flip(0), atol=1e-5, rtol=0)
    # crop of the pixel block [2, 6) x [4, 8) upsampled 2x equals bilinear interpolation of it
    # (away from the block border, where the crop also sees the neighbouring pixels)
    box = torch.tensor([[2.0, 4.0, 6.0, 8.0]])
    out = crop_and_resize_images(img, box, torch.tensor([0]), 8)
    ref = F.interpolate(img[:1, :, 4:8, 2:6], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_crop_of_a_linear_ramp_is_exact():
    # image value = x-coordinate of the pixel centre; crop [1.5, 5.5] x [0, 4] to 4 pixels:
    # output pixel u samples x = 1.5 + (u + 0.5); bilinear on a ramp gives x - 0.5 (centre offset)
    w = 8
    ramp = (torch.arange(w, dtype=torch.float32) + 0.5).expand(1, 1, 4, w).clone()
    out = crop_and_resize_images(ramp, torch.tensor([[1.5, 0.0, 5.5, 4.0]]), torch.tensor([0]), 4)
    expected = 1.5 + torch.arange(4, dtype=torch.float32) + 0.5
    torch.testing.assert_close(out[0, 0, 2], expected)


def _rois(boxes, labels, size=(100, 100)):
    b = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    b.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    return b


def test_select_skips_negatives_and_small_crops_and_caps_the_count():
    torch.manual_seed(0)
    rois = _rois(
        [[0, 0, 50, 50], [0, 0, 16, 40], [0, 0, 40, 17], [10, 10, 60, 60], [0, 0, 30, 30]],
        [1, 2, 3, 0, 2],
    )
    (idx,) = select_mimic_rois([rois], num_per_image=10, min_crop_size=16)
    # roi1 is exactly 16 wide (<= 16: skipped), roi3 is background
    assert sorted(idx.tolist()) == [0, 2, 4]
    (idx,) = select_mimic_rois([rois], num_per_image=2, min_crop_size=16)
    assert len(idx) == 2 and set(idx.tolist()) <= {0, 2, 4}


class _Extractor(nn.Module):
    """Stand-in box feature extractor: reduce = 1x1 conv, features = global average + fc."""

    def __init__(self):
        super().__init__()
        self.reduce_conv = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 6)
        self.seen_rois = None

    def reduce(self, x):
        return F.relu(self.reduce_conv(x))

    def forward(self, reduced, rois):
        self.seen_rois = rois
        return F.relu(self.fc(reduced.mean((2, 3))))


def _with_features(rois, fast):
    """The box head's training results: each RoI carries its fc feature ("box_features")."""
    for r, f in zip(rois, fast.split([len(r) for r in rois])):
        r.add_field("box_features", f)
    return rois


def _feature_fn(backbone, ext):
    """The detector's feature function over stand-ins: crops -> backbone -> reduce -> fc."""
    return lambda crops: ext(ext.reduce(backbone(crops)), None)


def test_mimic_losses_match_their_definition():
    torch.manual_seed(0)
    backbone = nn.Conv2d(3, 4, 3, stride=16, padding=1)
    ext = _Extractor()
    mimic = FeatureMimic(
        feature_dim=6,
        num_classes=3,
        num_per_image=4,
        min_crop_size=4,
        crop_size=32,
        weight_cos=0.5,
        weight_cls=0.25,
    )
    images = torch.randn(2, 3, 64, 64)
    rois = [
        _rois([[0, 0, 40, 40], [5, 5, 30, 50]], [1, 0], (64, 64)),
        _rois([[10, 10, 60, 40]], [2], (64, 64)),
    ]
    fast = torch.randn(3, 6, requires_grad=True)
    losses = mimic(images, _with_features(rois, fast), _feature_fn(backbone, ext))
    # recompute by hand: RoIs 0 (image 0) and 2 (image 1) are the positives
    crops = torch.stack(
        [
            F.interpolate(images[0:1, :, 0:40, 0:40], size=(32, 32), mode="bilinear")[0],
            crop_and_resize_images(
                images, torch.tensor([[10.0, 10, 60, 40]]), torch.tensor([1]), 32
            )[0],
        ]
    )
    f = ext(ext.reduce(backbone(crops)), None)
    cos = F.cosine_similarity(f, fast[[0, 2]], dim=1)
    torch.testing.assert_close(
        losses["loss_mimic_cos"], 0.5 * (1 - cos).sum(), rtol=1e-4, atol=1e-5
    )
    logits = mimic.cls_score(f)
    ce = F.cross_entropy(logits, torch.tensor([1, 2]))
    torch.testing.assert_close(losses["loss_mimic_cls"], 0.25 * ce, rtol=1e-4, atol=1e-5)
    (losses["loss_mimic_cos"] + losses["loss_mimic_cls"]).backward()
    assert fast.grad[1].abs().sum() == 0 and fast.grad[[0, 2]].abs().sum() > 0
    assert backbone.weight.grad is not None and mimic.cls_score.weight.grad is not None


def test_full_crop_roi_is_passed_to_pooling():
    """The R-CNN branch pools each crop with one RoI covering all of it."""
    ext = _Extractor()
    box_head = nn.Module()
    box_head.feature_extractor = ext
    heads = ROIHeads(reduce_conv=nn.Conv2d(4, 4, 1), box_head=box_head)
    crops_c5 = {"C5": torch.randn(2, 4, 2, 2)}
    heads.whole_image_box_features(crops_c5, 32)
    torch.testing.assert_close(
        ext.seen_rois, torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0], [1.0, 0.0, 0.0, 32.0, 32.0]])
    )


def test_no_positive_gives_connected_zeros():
    mimic = FeatureMimic(
        feature_dim=6,
        num_classes=3,
        num_per_image=4,
        min_crop_size=16,
        crop_size=32,
        weight_cos=1.0,
        weight_cls=1.0,
    )
    fast = torch.randn(2, 6, requires_grad=True)
    rois = [_rois([[0, 0, 40, 40], [0, 0, 10, 10]], [0, 1], (64, 64))]
    losses = mimic(
        torch.randn(1, 3, 64, 64),
        _with_features(rois, fast),
        _feature_fn(nn.Conv2d(3, 4, 1), _Extractor()),
    )
    assert set(losses) == {"loss_mimic_cos", "loss_mimic_cls"}
    assert all(float(v.detach()) == 0.0 for v in losses.values())
    sum(losses.values()).backward()
    assert fast.grad is not None and mimic.cls_score.weight.grad is not None


def test_rois_without_box_features_name_the_two_pass_ohem():
    """A box head running OHEM in two passes returns no "box_features": a clear error."""
    mimic = FeatureMimic(
        feature_dim=6,
        num_classes=3,
        num_per_image=4,
        min_crop_size=4,
        crop_size=32,
        weight_cos=1.0,
        weight_cls=1.0,
    )
    rois = [_rois([[0, 0, 40, 40]], [1], (64, 64))]
    with pytest.raises(ValueError, match="ohem_two_pass"):
        mimic(torch.randn(1, 3, 64, 64), rois, _feature_fn(nn.Conv2d(3, 4, 1), _Extractor()))
