"""OHEM: exactly the K hardest sampled RoIs per image contribute to the box head losses."""

import pytest
import torch
import torch.nn.functional as F

from detection.modeling.roi_heads.box_head import fastrcnn_losses, per_roi_losses, select_hardest


def test_select_hardest_per_image():
    loss = torch.tensor([0.1, 0.9, 0.5, 0.3, 2.0, 0.2, 0.05])
    keep = select_hardest(loss, [4, 3], k=2)
    assert keep.tolist() == [False, True, True, False, True, True, False]
    # images with fewer RoIs than k keep all; empty images are fine
    # image 0: one RoI (kept); image 1: none; image 2: six RoIs, the smallest (0.05) dropped
    keep = select_hardest(loss, [1, 0, 6], k=5)
    assert keep.tolist() == [True, True, True, True, True, True, False]
    with pytest.raises(ValueError, match="OHEM_BATCH_SIZE_PER_IMAGE"):
        select_hardest(loss, [7], k=0)


def _inputs(seed=0, n=12, c=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, requires_grad=True)
    deltas = torch.randn(n, 4 * c, generator=g, requires_grad=True)
    labels = torch.randint(0, c, (n,), generator=g)
    targets = torch.randn(n, 4, generator=g)
    return logits, deltas, labels, targets


def test_ohem_gradients_only_on_the_hardest_rows():
    logits, deltas, labels, targets = _inputs()
    loss_cls, loss_box, keep = fastrcnn_losses(
        logits, deltas, labels, targets, [7, 5], ohem_per_image=3
    )
    cls, box = per_roi_losses(logits, deltas, labels, targets)
    ranking = (cls + box).detach()
    expected = torch.zeros(12, dtype=torch.bool)
    expected[ranking[:7].topk(3).indices] = True
    expected[7 + ranking[7:].topk(3).indices] = True
    assert torch.equal(keep, expected)
    (loss_cls + loss_box).backward()
    row_has_grad = (logits.grad.abs().sum(1) > 0) | (deltas.grad.abs().sum(1) > 0)
    assert torch.equal(row_has_grad, expected)
    # normalisation: mean CE over the kept RoIs; box loss summed over kept positives / kept count
    ce = F.cross_entropy(logits[expected], labels[expected], reduction="sum") / 6
    torch.testing.assert_close(loss_cls, ce)
    torch.testing.assert_close(loss_box, box[expected].sum() / 6)


def test_without_ohem_every_roi_contributes():
    logits, deltas, labels, targets = _inputs(1)
    loss_cls, loss_box, keep = fastrcnn_losses(logits, deltas, labels, targets, [12])
    assert bool(keep.all())
    torch.testing.assert_close(loss_cls, F.cross_entropy(logits, labels))
    pos = labels > 0
    pred = deltas.view(12, -1, 4)[torch.arange(12), labels]
    sl1 = F.smooth_l1_loss(pred[pos], targets[pos], reduction="sum", beta=1.0) / 12
    torch.testing.assert_close(loss_box, sl1)


def test_background_only_batch_stays_connected():
    logits, deltas, _, targets = _inputs(2)
    labels = torch.zeros(12, dtype=torch.int64)
    loss_cls, loss_box, _ = fastrcnn_losses(logits, deltas, labels, targets, [12], ohem_per_image=4)
    assert float(loss_box.detach()) == 0.0
    loss_box.backward()
    assert deltas.grad is not None and float(deltas.grad.abs().sum()) == 0.0


def _box_head_losses_and_grads(head, reduced, proposals, targets, two_pass):
    """The box head's losses and the gradients of their sum (parameters, then the map)."""
    head.ohem_two_pass = two_pass
    head.zero_grad()
    x = reduced.detach().requires_grad_()
    torch.manual_seed(0)  # the RoI sampler draws at random: the same draw for both modes
    rois, losses = head(x, proposals, targets)
    sum(losses.values()).backward()
    grads = [p.grad.clone() for p in head.parameters()] + [x.grad]
    return rois, losses, grads


@pytest.mark.parametrize("cls_agnostic", [False, True])
def test_ohem_in_two_passes_matches_one_pass(cls_agnostic):
    """Two passes (rank every RoI without autograd, then forward and backward over the kept ones)
    give the one-pass losses and gradients, on a real box head with deformable RoI pooling."""
    from detection.modeling import build_detection_model
    from detection.structures.bounding_box import BoxList
    from detection.structures.image_list import to_image_list

    from .conftest import OPS_READY, tiny_batch, tiny_cfg

    if not OPS_READY:
        pytest.skip("needs the compiled detection ops")
    cfg = tiny_cfg("configs/shapes/e2e_deformconv_mask_rcnn_shapes_10min.yaml")
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = cls_agnostic
    torch.manual_seed(0)
    model = build_detection_model(cfg).double().train()
    head = model.roi_heads.box_head
    assert head.ohem_two_pass and head.ohem_per_image == 16  # the config without mimicking
    pool = head.feature_extractor.pooler.pool
    with torch.no_grad():  # zero-initialised: give the offsets and the mask something to learn
        for fc in (pool.offset_fc[-1], pool.mask_fc[-2]):
            fc.weight.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(2))
    images, targets = tiny_batch()
    # both images the first one's size, so both carry ground truth and many proposals
    images = to_image_list([images[0], images[0].flip(-1)], 16)
    targets = [targets[0], targets[0].transpose(0)]
    with torch.no_grad():
        reduced = model.roi_heads.reduce(model.backbone(images.tensors.double()))
    g = torch.Generator().manual_seed(1)
    proposals = []
    for t in targets:
        xy = torch.rand(40, 2, generator=g, dtype=torch.float64) * torch.tensor([100.0, 70.0])
        wh = 8 + torch.rand(40, 2, generator=g, dtype=torch.float64) * 50
        boxes = torch.cat([xy, xy + wh], 1)
        proposals.append(BoxList(torch.cat([boxes, t.bbox.double()]), t.size))
    rois1, losses1, grads1 = _box_head_losses_and_grads(head, reduced, proposals, targets, False)
    rois2, losses2, grads2 = _box_head_losses_and_grads(head, reduced, proposals, targets, True)
    # the same RoIs were sampled, half of them are dropped, and both losses are non-trivial
    assert [len(r) for r in rois1] == [len(r) for r in rois2] == [32, 32]
    for r1, r2 in zip(rois1, rois2):
        assert torch.equal(r1.bbox, r2.bbox)
        assert torch.equal(r1.get_field("labels"), r2.get_field("labels"))
    assert "box_features" in rois1[0].fields() and "box_features" not in rois2[0].fields()
    assert all(float(v.detach()) > 0 for v in losses1.values())
    # the head computes its losses in float32 (its outputs are cast): float32 rounding
    for k in losses1:
        torch.testing.assert_close(losses2[k], losses1[k], rtol=1e-6, atol=1e-7)
    assert all(float(g.abs().sum()) > 0 for g in grads1)
    for g1, g2 in zip(grads1, grads2):
        torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-7)
