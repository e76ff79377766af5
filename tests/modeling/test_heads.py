"""RPN targets, RoI sampling, detection post-processing and the mask head's channel selection."""

import torch
from torch import nn
import torch.nn.functional as F

from detection.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detection.modeling.box_coder import BoxCoder
from detection.modeling.matcher import Matcher
from detection.modeling.roi_heads.box_head import BoxPostProcessor, RoISampler
from detection.modeling.roi_heads.mask_head import ROIMaskHead
from detection.modeling.rpn.loss import RPNLossComputation
from detection.structures.bounding_box import BoxList

from .conftest import make_target, needs_ops


def _rpn_loss(batch=8, frac=0.5):
    return RPNLossComputation(
        matcher=Matcher(0.7, 0.3, allow_low_quality_matches=True),
        sampler=BalancedPositiveNegativeSampler(batch, frac),
        box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)),
        smooth_l1_beta=1.0 / 9,
    )


def _anchors(boxes, size=(100, 100), visible=None):
    a = BoxList(torch.tensor(boxes, dtype=torch.float32), size)
    vis = torch.ones(len(boxes), dtype=torch.bool) if visible is None else torch.tensor(visible)
    a.add_field("visibility", vis)
    return a


def test_rpn_anchor_labels_hand_derived():
    gt = make_target((100, 100), [[0, 0, 40, 40]], [1])
    anchors = _anchors(
        [
            [0, 0, 40, 40],  # IoU 1 -> positive
            [0, 0, 40, 20],  # IoU 0.5 -> between -> ignored
            [60, 60, 90, 90],  # IoU 0 -> negative
            [0, 0, 40, 40],  # IoU 1 but not visible -> ignored
            [10, 0, 50, 40],  # IoU 30*40 / (2*1600 - 1200) = 0.6 -> ignored
        ],
        visible=[True, True, True, False, True],
    )
    labels, reg = _rpn_loss().prepare_targets([anchors], [gt])
    assert labels[0].tolist() == [1.0, -1.0, 0.0, -1.0, -1.0]
    torch.testing.assert_close(reg[0][0], torch.zeros(4))
    # anchor 4 -> GT: dx = (20 - 30) / 40, dw = log(40 / 40)
    torch.testing.assert_close(reg[0][4], torch.tensor([-0.25, 0.0, 0.0, 0.0]))


def test_rpn_losses_definition():
    torch.manual_seed(0)
    gt = make_target((100, 100), [[0, 0, 40, 40]], [1])
    anchors = _anchors([[0, 0, 40, 40], [60, 60, 90, 90], [50, 0, 90, 30]])
    obj = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    deltas = torch.tensor([[[0.3, 0.05, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    loss_obj, loss_reg = _rpn_loss()([anchors], obj, deltas, [gt])
    # all three anchors sampled (1 positive, 2 negatives)
    expected_obj = F.binary_cross_entropy_with_logits(obj[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(loss_obj, expected_obj)
    # smooth L1 (beta 1/9) of the positive's deltas (target 0): x 0.3 >= beta -> 0.3 - 0.5 / 9;
    # y 0.05 < beta -> 0.5 * 0.05^2 * 9; the negatives' deltas do not count; divided by 3 sampled
    torch.testing.assert_close(loss_reg, torch.tensor((0.3 - 0.5 / 9 + 0.5 * 0.05**2 * 9) / 3))


def test_rpn_without_ground_truth_all_visible_anchors_negative():
    anchors = _anchors([[0, 0, 10, 10], [20, 20, 50, 50]], visible=[True, False])
    labels, _ = _rpn_loss().prepare_targets([anchors], [make_target((100, 100), [], [])])
    assert labels[0].tolist() == [0.0, -1.0]


def test_roi_sampler_adds_gt_and_sets_targets():
    torch.manual_seed(0)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    sampler = RoISampler(
        matcher=Matcher(0.5, 0.5), sampler=BalancedPositiveNegativeSampler(16, 0.5), box_coder=coder
    )
    gt = make_target((100, 100), [[10, 10, 50, 50], [60, 60, 90, 95]], [2, 1])
    props = BoxList(torch.tensor([[12.0, 10, 50, 50], [0, 60, 20, 90]]), (100, 100))
    (rois,) = sampler([props], [gt])
    assert len(rois) == 4  # 2 proposals + 2 GT boxes, all sampled
    order = {tuple(b.tolist()): i for i, b in enumerate(rois.bbox)}
    lab = rois.get_field("labels")
    mi = rois.get_field("matched_idxs")
    reg = rois.get_field("regression_targets")
    i = order[(12.0, 10.0, 50.0, 50.0)]  # IoU 38/40 with GT 0
    assert lab[i] == 2 and mi[i] == 0
    torch.testing.assert_close(reg[i], coder.encode(gt.bbox[:1], rois.bbox[i : i + 1])[0])
    j = order[(0.0, 60.0, 20.0, 90.0)]  # no overlap -> background
    assert lab[j] == 0 and mi[j] == -1 and bool((reg[j] == 0).all())
    k = order[(60.0, 60.0, 90.0, 95.0)]  # the GT box itself
    assert lab[k] == 1 and mi[k] == 1 and bool((reg[k].abs() < 1e-6).all())


@needs_ops
def test_box_post_processor_threshold_nms_and_order():
    post = BoxPostProcessor(
        score_thresh=0.2, nms_thresh=0.5, detections_per_img=10, box_coder=BoxCoder((10, 10, 5, 5))
    )
    props = BoxList(
        torch.tensor([[10.0, 10, 50, 50], [12, 10, 50, 50], [60, 60, 90, 90], [0, 0, 200, 200]]),
        (100, 80),
    )
    # 3 classes (bg, 1, 2); proposals 0 and 1 overlap (IoU 0.95) and both say class 1
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]])
    logits = probs.log()
    (det,) = post(logits, torch.zeros(4, 12), [props])
    # class 1: proposal 0 (0.8) suppresses proposal 1; class 2: proposal 2 (0.9); the rest < 0.2
    assert det.get_field("labels").tolist() == [2, 1]
    torch.testing.assert_close(det.get_field("scores"), torch.tensor([0.9, 0.8]))
    torch.testing.assert_close(det.bbox, torch.tensor([[60.0, 60, 90, 80], [10, 10, 50, 50]]))
    assert det.size == (100, 80)


class _FixedLogits(nn.Module):
    """Mask head stand-in: logits[r, c] = r * 10 + c everywhere."""

    def forward(self, reduced, rois):
        r = torch.arange(rois.shape[0], dtype=torch.float32)[:, None]
        c = torch.arange(3, dtype=torch.float32)[None]
        return (r * 10 + c)[:, :, None, None].expand(-1, -1, 28, 28).contiguous() * 0.01


def test_mask_inference_selects_the_predicted_label_channel():
    head = ROIMaskHead(head=_FixedLogits(), resolution=28).eval()
    det = BoxList(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]), (32, 32))
    det.add_field("labels", torch.tensor([2, 1]))
    (out,), _ = head(torch.zeros(1, 4, 2, 2), [det])
    m = out.get_field("mask")
    assert m.shape == (2, 1, 28, 28)
    torch.testing.assert_close(m[0, 0, 0, 0], torch.sigmoid(torch.tensor(0.02)))
    torch.testing.assert_close(m[1, 0, 0, 0], torch.sigmoid(torch.tensor(0.11)))


def test_mask_loss_uses_gt_class_channel_of_positives_only():
    head = ROIMaskHead(head=_FixedLogits(), resolution=28).train()
    gt = make_target((64, 64), [[0, 0, 32, 32]], [2])
    rois = BoxList(torch.tensor([[0.0, 0, 32, 32], [40, 40, 60, 60]]), (64, 64))
    rois.add_field("labels", torch.tensor([2, 0]))
    rois.add_field("matched_idxs", torch.tensor([0, -1]))
    _, losses = head(torch.zeros(1, 4, 4, 4), [rois], [gt])
    # one positive (row 0 of the head's output), channel 2, target all ones inside its box
    target = gt.get_field("masks").crop_and_resize(torch.tensor([[0.0, 0, 32, 32]]), 28)
    assert float(target.min()) == 1.0
    expected = F.binary_cross_entropy_with_logits(torch.full((28, 28), 0.02), target[0])
    torch.testing.assert_close(losses["loss_mask"], expected)


def _mask_head(pooler: str, output_size: int, conv_layers, num_classes: int):
    """A MaskHead on 8-channel features (seeded)."""
    from detection.modeling.roi_heads.mask_head import MaskHead
    from detection.modeling.roi_heads.poolers import Pooler

    torch.manual_seed(0)
    pooler = Pooler(
        name=pooler,
        output_size=output_size,
        spatial_scale=1 / 16,
        sampling_ratio=2,
        gamma=0.1,
        in_channels=8,
        fc_channels=16,
    )
    return MaskHead(in_channels=8, pooler=pooler, conv_layers=conv_layers, num_classes=num_classes)


@needs_ops
def test_mask_head_channels_last_matches_nchw():
    head = _mask_head("ModulatedDeformRoIPool", 7, (8, 8), 3).double()
    rois = torch.tensor([[0, 4.0, 4, 90, 70], [1, 30, 10, 60, 100], [0, 0, 0, 127, 127]])
    feature = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    results = {}
    for channels_last in (False, True):
        head.channels_last = channels_last
        head.zero_grad()
        x = feature.clone().requires_grad_()
        out = head(x, rois.double())
        # the convs ran on NHWC tensors only when asked (the layout reaches the logits)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert out.shape == (3, 3, 14, 14)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in head.parameters()]
        results[channels_last] = (out.detach().contiguous(), x.grad, grads)
    (o0, g0, p0), (o1, g1, p1) = results[False], results[True]
    torch.testing.assert_close(o1, o0)
    torch.testing.assert_close(g1, g0)
    for a, b in zip(p1, p0):
        torch.testing.assert_close(a, b)


@needs_ops
def test_mask_head_logits_gradient_keeps_the_parameters_strides():
    # DDP's reducer compares each gradient's strides with its parameter's (the bucket view's)
    # and warns on a mismatch. On the CPU's channels-last path oneDNN hands a 1x1 conv's weight
    # gradient back with channels-last strides (at one thread too from about this size on), so
    # the logits weight goes in through a view in training
    head = _mask_head("RoIAlign", 14, (32,), 4).train()
    x = torch.randn(64, 32, 28, 28).contiguous(memory_format=torch.channels_last)
    results = []
    for logits in (head._logits, head.logits):
        head.zero_grad()
        y = logits(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y.detach(), head.logits.weight.grad, head.logits.bias.grad))
    (y, gw, gb), plain = results
    assert gw.stride() == head.logits.weight.stride()
    assert y.is_contiguous(memory_format=torch.channels_last)
    # the view changes nothing in the values: the module's own conv on the same input
    for a, b in zip((y, gw, gb), plain):
        assert torch.equal(a, b)
