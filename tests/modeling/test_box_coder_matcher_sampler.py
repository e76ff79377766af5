"""BoxCoder, Matcher and the balanced sampler against hand-derived values."""

import math

import pytest
import torch

from detection.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detection.modeling.box_coder import BoxCoder
from detection.modeling.matcher import Matcher


def test_encode_hand_derived():
    # reference box: centre (10, 20), size 20 x 40; target: centre (15, 10), size 40 x 10
    ref = torch.tensor([[0.0, 0.0, 20.0, 40.0]])
    tgt = torch.tensor([[-5.0, 5.0, 35.0, 15.0]])
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    d = coder.encode(tgt, ref)
    # dx = 10 * (15 - 10) / 20, dy = 10 * (10 - 20) / 40, dw = 5 log(40/20), dh = 5 log(10/40)
    expected = torch.tensor([[2.5, -2.5, 5 * math.log(2.0), 5 * math.log(0.25)]])
    torch.testing.assert_close(d, expected)


def test_decode_inverts_encode_and_handles_k_classes():
    torch.manual_seed(1)
    ref = torch.rand(7, 2) * 50
    ref = torch.cat([ref, ref + 5 + torch.rand(7, 2) * 30], 1)
    tgt = torch.rand(7, 2) * 50
    tgt = torch.cat([tgt, tgt + 5 + torch.rand(7, 2) * 30], 1)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    d = coder.encode(tgt, ref)
    torch.testing.assert_close(coder.decode(d, ref), tgt, rtol=1e-5, atol=1e-4)
    # three classes: column group k decodes deltas k
    d3 = torch.cat([torch.zeros_like(d), d, d * 0.5], 1)
    out = coder.decode(d3, ref)
    assert out.shape == (7, 12)
    torch.testing.assert_close(out[:, :4], ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out[:, 4:8], tgt, rtol=1e-5, atol=1e-4)


def test_decode_clamps_huge_scales():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(10.0))
    out = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), torch.tensor([[0.0, 0.0, 2.0, 2.0]]))
    # width = 2 * exp(log 10) = 20 around centre x = 1
    torch.testing.assert_close(out, torch.tensor([[-9.0, 0.0, 11.0, 2.0]]))


def test_box_coder_rejects_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0))


def test_matcher_thresholds_and_low_quality():
    iou = torch.tensor(
        [
            [0.9, 0.5, 0.1, 0.0],
            [0.1, 0.6, 0.2, 0.35],
        ]
    )
    m = Matcher(0.7, 0.3)(iou)
    # pred0: 0.9 -> gt0; pred1: best 0.6 in [0.3, 0.7) -> -2; pred2: 0.2 -> -1; pred3: 0.35 -> -2
    assert m.tolist() == [0, -2, -1, -2]
    m = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    # gt1's best IoU is 0.6 at pred1 -> pred1 matched to gt1 despite being below 0.7
    assert m.tolist() == [0, 1, -1, -2]


def test_matcher_no_ground_truth():
    m = Matcher(0.5, 0.5)(torch.zeros(0, 5))
    assert m.tolist() == [-1] * 5


def test_matcher_rejects_inverted_thresholds():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


def test_sampler_respects_fraction_and_budget():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 10 + [0] * 20 + [-1] * 5)
    pos, neg = BalancedPositiveNegativeSampler(8, 0.25)([labels])
    assert int(pos[0].sum()) == 2 and int(neg[0].sum()) == 6
    assert bool((labels[pos[0]] == 1).all()) and bool((labels[neg[0]] == 0).all())
    # too few positives: negatives fill the batch
    labels = torch.tensor([3] + [0] * 20)
    pos, neg = BalancedPositiveNegativeSampler(8, 0.5)([labels])
    assert int(pos[0].sum()) == 1 and int(neg[0].sum()) == 7
    # nothing to sample
    pos, neg = BalancedPositiveNegativeSampler(8, 0.5)([torch.full((4,), -1)])
    assert int(pos[0].sum()) == 0 and int(neg[0].sum()) == 0
