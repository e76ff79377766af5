"""ImageList / to_image_list padding and sizes."""

import pytest
import torch

from detection.structures.image_list import ImageList, to_image_list


def test_pads_bottom_right_with_zeros():
    a = torch.rand(3, 5, 7) + 1
    b = torch.rand(3, 6, 4) + 1
    il = to_image_list([a, b])
    assert il.tensors.shape == (2, 3, 6, 7)
    assert il.image_sizes == [(5, 7), (6, 4)]  # (h, w)
    assert torch.equal(il.tensors[0, :, :5, :7], a) and il.tensors[0, :, 5:].abs().sum() == 0
    assert torch.equal(il.tensors[1, :, :6, :4], b) and il.tensors[1, :, :, 4:].abs().sum() == 0


def test_size_divisible_and_inputs():
    il = to_image_list([torch.ones(3, 5, 7), torch.ones(3, 6, 4)], size_divisible=32)
    assert il.tensors.shape == (2, 3, 32, 32)
    single = to_image_list(torch.ones(3, 10, 20), size_divisible=16)
    assert single.tensors.shape == (1, 3, 16, 32) and single.image_sizes == [(10, 20)]
    batch = to_image_list(torch.ones(2, 3, 8, 8))
    assert batch.image_sizes == [(8, 8), (8, 8)]
    assert to_image_list(il) is il
    assert len(il.to("cpu")) == 2


def test_errors_name_argument():
    with pytest.raises(ValueError, match="channel"):
        to_image_list([torch.ones(3, 4, 4), torch.ones(1, 4, 4)])
    with pytest.raises(ValueError, match="tensors"):
        to_image_list([])
    with pytest.raises(ValueError, match="size_divisible"):
        to_image_list([torch.ones(3, 4, 4)], size_divisible=-1)
    with pytest.raises(ValueError, match="image_sizes"):
        ImageList(torch.ones(2, 3, 4, 4), [(4, 4)])
