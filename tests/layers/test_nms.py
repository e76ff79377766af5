"""nms / batched_nms against torchvision, ties, empty input, opcheck (unbacked output size),
errors."""

import pytest
import torch
import torchvision

from detection import _ext
from detection.layers import batched_nms, nms

pytestmark = pytest.mark.skipif(not _ext.HAS_OPS, reason="detection._C not built")


def _random_boxes(n, seed, size=100.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 4
    return torch.cat([xy, xy + wh], dim=1).to(dtype), torch.rand(n, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_matches_torchvision(iou_threshold, dtype):
    for seed in range(4):
        boxes, scores = _random_boxes(300, seed, dtype=dtype)
        keep = nms(boxes, scores, iou_threshold)
        assert keep.dtype == torch.int64
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, iou_threshold))
        assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_ties_keep_input_order_and_identical_boxes():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [1, 1, 10, 10], [40, 40, 50, 50]],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9, 0.5])
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [3, 1, 4]
    # rounded scores with many exact ties
    boxes, scores = _random_boxes(400, 7)
    scores = (scores * 10).round() / 10
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_empty_and_single():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    assert batched_nms(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5
    ).shape == (0,)
    assert nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5).tolist() == [0]


def test_batched_nms_matches_torchvision():
    for seed in range(4):
        boxes, scores = _random_boxes(500, seed)
        idxs = torch.randint(0, 5, (500,), generator=torch.Generator().manual_seed(seed))
        for thr in (0.3, 0.6):
            ours = batched_nms(boxes, scores, idxs, thr)
            assert torch.equal(ours, torchvision.ops.batched_nms(boxes, scores, idxs, thr))
    # classes never suppress each other, even with negative coordinates
    boxes = torch.tensor([[-50.0, -50, -40, -40], [-50, -50, -40, -40]])
    assert batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist() == [
        0,
        1,
    ]
    assert batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.5).tolist() == [0]


def _per_category_nms(boxes, scores, idxs, thr):
    """batched_nms by its definition: one nms per category, merged by decreasing score."""
    kept = []
    for c in idxs.unique():
        where = torch.nonzero(idxs == c).flatten()
        kept.append(where[nms(boxes[where], scores[where], thr)])
    kept = torch.cat(kept)
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def test_batched_nms_with_non_finite_boxes_matches_per_category_nms():
    """An infinite coordinate used to make the category shift infinite (every shifted box NaN):
    nothing was suppressed. Now the finite boxes are suppressed within their categories exactly
    as one nms per category does, and the non-finite boxes suppress nothing."""
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(60, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 10 + torch.rand(60, 2, generator=g) * 20], dim=1)
    boxes[3, 2] = float("inf")
    boxes[17, 0] = -float("inf")
    boxes[40, 1] = float("nan")
    scores = torch.rand(60, generator=g)
    idxs = torch.randint(0, 3, (60,), generator=g)
    ours = batched_nms(boxes, scores, idxs, 0.5)
    expected = _per_category_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(ours, expected)
    assert len(ours) < 57  # some of the 57 finite boxes were suppressed (none were before)
    assert {3, 17, 40} <= set(ours.tolist())
    all_inf = torch.full((2, 4), float("inf"))
    assert batched_nms(all_inf, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist() == [
        0,
        1,
    ]


def test_opcheck_and_fake_dynamic_size():
    boxes, scores = _random_boxes(50, 3)
    torch.library.opcheck(torch.ops.detection.nms.default, (boxes, scores, 0.5))
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        out = torch.ops.detection.nms(mode.from_tensor(boxes), mode.from_tensor(scores), 0.5)
    assert out.dtype == torch.int64 and isinstance(out.shape[0], torch.SymInt)


def test_autocast_runs_in_float32():
    boxes, scores = _random_boxes(50, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keep = nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
    assert torch.equal(
        keep, torchvision.ops.nms(boxes.bfloat16().float(), scores.bfloat16().float(), 0.5)
    )


def test_bad_input_raises_clear_errors():
    with pytest.raises(RuntimeError, match=r"dets \(boxes\) must be a Tensor\[K, 4\]"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(RuntimeError, match="scores must be a Tensor"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(RuntimeError, match="floating point"):
        nms(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.long), 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_kernels_match_cpu_and_torchvision(cuda_backend, dtype):
    """The CUDA kernels on every CUDA backend at hand (the real GPU when visible, the CUDA
    emulation always). 65 and 3000 boxes take several 64-box mask words and column blocks, and
    the gather's threads stride over them."""
    b = cuda_backend
    for seed, n in ((0, 0), (1, 1), (2, 63), (3, 64), (4, 65), (5, 3000)):
        boxes, scores = _random_boxes(n, seed, size=500.0)
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        keep = b.ops.nms(b.to(boxes), b.to(scores), 0.5)
        assert keep.device.type == b.device.type and keep.dtype == torch.int64
        # half boxes: IoU is computed in float from the half values, as torchvision in float32
        expected = torchvision.ops.nms(boxes.float(), scores.float(), 0.5)
        assert torch.equal(keep.cpu(), expected), (n, dtype)
        if dtype in (torch.float32, torch.float64):  # our CPU kernel is float32/float64 only
            assert torch.equal(keep.cpu(), nms(boxes, scores, 0.5)), (n, dtype)
    boxes, scores = _random_boxes(2000, 9)
    idxs = torch.randint(0, 10, (2000,))
    # batched_nms offsets the boxes per class and calls the op once
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    shifted = boxes + offsets[:, None]
    ours = b.ops.nms(b.to(shifted), b.to(scores), 0.5).cpu()
    assert torch.equal(ours, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
