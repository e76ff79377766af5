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
