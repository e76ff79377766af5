"""The standard-op decomposition of modulated deformable RoI pooling against the op itself."""

import pytest
import torch

from detection import HAS_OPS

pytestmark = pytest.mark.skipif(not HAS_OPS, reason="needs the compiled detection ops")


def _case(seed: int, r: int = 9, n: int = 2, c: int = 3, h: int = 11, w: int = 13):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    # boxes in image pixels (scale 1/2): some inside, some across and beyond every border
    xy1 = torch.rand(r, 2, generator=g, dtype=torch.float64) * torch.tensor([2.0 * w, 2.0 * h]) - 6
    size = torch.rand(r, 2, generator=g, dtype=torch.float64) * 14 + 0.5
    batch = torch.randint(0, n, (r, 1), generator=g).double()
    rois = torch.cat([batch, xy1, xy1 + size], dim=1)
    offset = torch.randn(r, 2, 3, 4, generator=g, dtype=torch.float64) * 2
    mask = torch.rand(r, 1, 3, 4, generator=g, dtype=torch.float64)
    return x, rois, offset, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_offset,with_mask", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_deform_roi_pool_decomposition_matches_op(seed, with_offset, with_mask, sampling_ratio):
    from detection.deploy.decompositions import modulated_deform_roi_pool

    x, rois, offset, mask = _case(seed)
    offset = offset if with_offset else None
    mask = mask if with_mask else None
    args = (x, rois, offset, mask, 3, 4, 0.5, sampling_ratio, 0.3)
    expected = torch.ops.detection.modulated_deform_roi_pool(*args)
    got = modulated_deform_roi_pool(*args)
    assert got.shape == expected.shape
    assert expected.abs().max() > 0.1  # not an all-zero case
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_deform_roi_pool_decomposition_float32_and_no_rois():
    from detection.deploy.decompositions import modulated_deform_roi_pool

    x, rois, offset, mask = (t.float() for t in _case(3))
    args = (x, rois, offset, mask, 3, 4, 0.5, 2, 0.1)
    torch.testing.assert_close(
        modulated_deform_roi_pool(*args), torch.ops.detection.modulated_deform_roi_pool(*args)
    )
    empty = (x, rois[:0], offset[:0], mask[:0], 3, 4, 0.5, 2, 0.1)
    assert modulated_deform_roi_pool(*empty).shape == (0, 3, 3, 4)


def test_adaptive_sampling_does_not_decompose():
    from detection.deploy.decompositions import modulated_deform_roi_pool

    x, rois, offset, mask = _case(0)
    with pytest.raises(NotImplementedError, match="sampling_ratio"):
        modulated_deform_roi_pool(x, rois, offset, mask, 3, 4, 0.5, 0, 0.1)
