"""paste_masks_in_image: geometry on hand-derived cases."""

import pytest
import torch

from detection.structures.mask_paste import paste_masks_in_image


def test_full_mask_fills_its_box_exactly():
    masks = torch.ones(1, 1, 28, 28)
    boxes = torch.tensor([[4.0, 2.0, 12.0, 10.0]])
    out = paste_masks_in_image(masks, boxes, (16, 20), threshold=0.5, padding=1)
    assert out.shape == (1, 1, 16, 20) and out.dtype == torch.bool
    expected = torch.zeros(16, 20, dtype=torch.bool)
    expected[2:10, 4:12] = True
    assert torch.equal(out[0, 0], expected)


def test_half_mask_and_no_padding():
    # left half of the mask on: pixels of the box's left half
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, :, :2] = 1.0
    masks[1, 0] = 1.0
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 8.0, 16.0, 12.0]])
    out = paste_masks_in_image(masks, boxes, (12, 16), threshold=0.5, padding=0)
    exp0 = torch.zeros(12, 16, dtype=torch.bool)
    exp0[0:8, 0:4] = True
    exp1 = torch.zeros(12, 16, dtype=torch.bool)
    exp1[8:12, 8:16] = True
    assert torch.equal(out[0, 0], exp0)
    assert torch.equal(out[1, 0], exp1)


def test_empty_and_bad_inputs():
    out = paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (5, 6))
    assert out.shape == (0, 1, 5, 6)
    with pytest.raises(ValueError, match="masks"):
        paste_masks_in_image(torch.zeros(2, 28, 28), torch.zeros(2, 4), (5, 6))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(torch.zeros(2, 1, 28, 28), torch.zeros(3, 4), (5, 6))
