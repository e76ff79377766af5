"""Batch-level rescaling (INPUT.BATCH_SCALES_TRAIN): the schedule, the images with their boxes
and masks, and the training loader (resume, sizes)."""

import pytest
import torch

from detection.data.batch_scale import BatchScaleSchedule, rescale_batch
from detection.structures.bounding_box import BoxList
from detection.structures.image_list import to_image_list
from detection.structures.segmentation_mask import SegmentationMask


def test_schedule_draws_from_seed_and_iteration_only():
    a = BatchScaleSchedule(scales=(0.5, 0.75, 1.0), until=1.0, max_iter=300, seed=0)
    draws = [a.scale(it) for it in range(300)]
    assert set(draws) == {0.5, 0.75, 1.0}
    # the same iteration gives the same factor in any order and in a new object (resume)
    again = BatchScaleSchedule(scales=(0.5, 0.75, 1.0), until=1.0, max_iter=300, seed=0)
    assert [again.scale(it) for it in reversed(range(300))] == draws[::-1]
    other = BatchScaleSchedule(scales=(0.5, 0.75, 1.0), until=1.0, max_iter=300, seed=1)
    assert [other.scale(it) for it in range(300)] != draws


def test_schedule_until_keeps_the_rest_at_full_size():
    s = BatchScaleSchedule(scales=(0.75,), until=0.5, max_iter=10, seed=0)
    assert [s.scale(it) for it in range(10)] == [0.75] * 5 + [1.0] * 5
    s = BatchScaleSchedule(scales=(0.5, 0.75), until=0.25, max_iter=8, seed=3)
    assert [s.scale(it) for it in range(2, 8)] == [1.0] * 6
    assert {s.scale(it) for it in range(2)} <= {0.5, 0.75}


@pytest.mark.parametrize("scales, until", [((), 1.0), ((0.0,), 1.0), ((0.5,), 0.0), ((0.5,), 1.5)])
def test_schedule_rejects_bad_arguments(scales, until):
    with pytest.raises(ValueError):
        BatchScaleSchedule(scales=scales, until=until, max_iter=10, seed=0)


def _image_with_square(h, w, box):
    """A Tensor[3, h, w] of zeros with ones inside `box` (x1, y1, x2, y2), its BoxList and mask."""
    image = torch.zeros(3, h, w)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    mask = torch.zeros(1, h, w, dtype=torch.uint8)
    mask[0, y1:y2, x1:x2] = 1
    target = BoxList(torch.tensor([box], dtype=torch.float32), (w, h))
    target.add_field("labels", torch.tensor([1]))
    target.add_field("masks", SegmentationMask(mask, (w, h), "mask"))
    return image, target


def test_rescale_batch_moves_boxes_and_masks_with_the_pixels():
    a, ta = _image_with_square(64, 80, (16, 8, 48, 40))
    b, tb = _image_with_square(72, 56, (8, 24, 40, 64))
    images = to_image_list([a, b], 16)
    scaled, targets = rescale_batch(images, (ta, tb), 0.5, 16)
    assert scaled.image_sizes == [(32, 40), (36, 28)]
    assert tuple(scaled.tensors.shape) == (2, 3, 48, 48)  # 36 x 40 padded to 16
    for (h, w), image, target in zip(scaled.image_sizes, scaled.tensors, targets):
        assert target.size == (w, h)
        x1, y1, x2, y2 = (int(v) for v in target.bbox[0].tolist())
        inside = image[0, y1:y2, x1:x2]
        assert inside.numel() > 0 and bool((inside > 0.99).all())  # the square's pixels
        assert float(image[0, :h, :w].sum()) == pytest.approx(float(inside.sum()), rel=0.05)
        mask = target.get_field("masks").masks[0]
        assert tuple(mask.shape) == (h, w)
        assert torch.equal(mask.bool(), image[0, :h, :w] > 0.5)
        assert float(image[:, h:, :].abs().sum() + image[:, :, w:].abs().sum()) == 0  # padding


def test_rescale_batch_by_one_is_the_batch():
    a, ta = _image_with_square(64, 80, (16, 8, 48, 40))
    images = to_image_list([a], 16)
    same, targets = rescale_batch(images, [ta], 1.0, 16)
    assert same is images and targets[0] is ta
