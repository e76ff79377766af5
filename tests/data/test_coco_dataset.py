"""COCODataset reads back COCO JSON written here: polygons, RLE, crowd, empty and invalid
annotations, an image without annotations and a corrupt image."""

import json
import logging
import os

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from detection.data.datasets.coco import COCODataset


def _rle_json(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@pytest.fixture()
def coco_files(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rng = np.random.RandomState(0)
    images = []
    for i, (w, h) in enumerate([(40, 30), (32, 48), (20, 20), (24, 24)], start=1):
        images.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h})
        cv2.imwrite(str(img_dir / f"{i}.png"), rng.randint(0, 255, (h, w, 3), dtype=np.uint8))
    (img_dir / "4.png").write_bytes(b"this is not an image")  # corrupt
    blob = np.zeros((48, 32), np.uint8)
    blob[10:30, 5:20] = 1
    crowd = np.zeros((30, 40), np.uint8)
    crowd[0:5, 0:40] = 1
    anns = [
        # image 1: a polygon, a crowd RLE, two invalid ones
        dict(
            id=1,
            image_id=1,
            category_id=7,
            iscrowd=0,
            area=80.0,
            bbox=[2, 3, 10, 8],
            segmentation=[[2, 3, 12, 3, 12, 11, 2, 11]],
        ),
        dict(
            id=2,
            image_id=1,
            category_id=3,
            iscrowd=1,
            area=200.0,
            bbox=[0, 0, 40, 5],
            segmentation=_rle_json(crowd),
        ),
        dict(
            id=3,
            image_id=1,
            category_id=3,
            iscrowd=0,
            area=1.0,
            bbox=[5, 5, 1, 1],
            segmentation=[[5, 5, 6, 5, 6, 6]],
        ),
        dict(
            id=4,
            image_id=1,
            category_id=3,
            iscrowd=0,
            area=0.0,
            bbox=[5, 5, 4, 4],
            segmentation=[[]],
        ),
        # image 2: an RLE (non-crowd) and a polygon -> binary masks
        dict(
            id=5,
            image_id=2,
            category_id=3,
            iscrowd=0,
            area=300.0,
            bbox=[5, 10, 15, 20],
            segmentation=_rle_json(blob),
        ),
        dict(
            id=6,
            image_id=2,
            category_id=7,
            iscrowd=0,
            area=16.0,
            bbox=[20, 40, 4, 4],
            segmentation=[[20, 40, 24, 40, 24, 44, 20, 44]],
        ),
        # image 3: none; image 4 (corrupt): one valid box; a box outside image 4
        dict(
            id=7,
            image_id=4,
            category_id=3,
            iscrowd=0,
            area=16.0,
            bbox=[1, 1, 4, 4],
            segmentation=[[1, 1, 5, 1, 5, 5, 1, 5]],
        ),
        dict(
            id=8,
            image_id=4,
            category_id=3,
            iscrowd=0,
            area=16.0,
            bbox=[30, 30, 4, 4],
            segmentation=[[30, 30, 34, 30, 34, 34, 30, 34]],
        ),
    ]
    cats = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(ann_file), str(img_dir), blob


def test_categories_and_filtering(coco_files, caplog):
    ann_file, root, _ = coco_files
    with caplog.at_level(logging.WARNING):
        train = COCODataset(ann_file, root, remove_images_without_annotations=True)
    assert "skipped 3 invalid annotations" in caplog.text
    assert train.num_invalid_annotations == 3
    assert train.json_category_id_to_contiguous_id == {3: 1, 7: 2}
    assert train.contiguous_category_id_to_json_id == {1: 3, 2: 7}
    assert train.categories == {1: "three", 2: "seven"}
    assert train.ids == [1, 2, 4]  # image 3 has no annotation
    assert train.id_to_img_map == {0: 1, 1: 2, 2: 4}
    assert train.get_img_info(1) == {"id": 2, "file_name": "2.png", "width": 32, "height": 48}
    test = COCODataset(ann_file, root, remove_images_without_annotations=False)
    assert len(test) == 4 and test.id_to_img_map[2] == 3
    img, target, idx = test[2]  # kept for evaluation, with an empty target
    assert idx == 2 and len(target) == 0 and target.size == (20, 20)
    assert len(target.get_field("masks")) == 0 and target.get_field("labels").dtype == torch.int64
    flipped = target.resize((40, 40)).transpose(0)
    assert len(flipped) == 0 and flipped.get_field("masks").size == (40, 40)


def test_polygon_target_without_crowd(coco_files):
    ann_file, root, _ = coco_files
    ds = COCODataset(ann_file, root, remove_images_without_annotations=True)
    img, target, idx = ds[0]
    assert idx == 0 and img.shape == (30, 40, 3) and img.dtype == np.uint8  # BGR uint8
    assert target.size == (40, 30) and target.mode == "xyxy"
    assert target.bbox.tolist() == [[2.0, 3.0, 12.0, 11.0]]  # crowd and invalid excluded
    assert target.get_field("labels").tolist() == [2]  # json 7 -> contiguous 2
    masks = target.get_field("masks")
    assert masks.mode == "poly" and len(masks) == 1
    raster = masks.get_mask_tensor()[0]
    assert raster.sum() == 80 and raster[3:11, 2:12].all()


def test_rle_target(coco_files):
    ann_file, root, blob = coco_files
    ds = COCODataset(ann_file, root, remove_images_without_annotations=True)
    _, target, _ = ds[1]
    masks = target.get_field("masks")
    assert masks.mode == "mask" and masks.size == (32, 48)
    assert torch.equal(masks.get_mask_tensor()[0], torch.from_numpy(blob))
    assert masks.get_mask_tensor()[1].sum() == 16
    assert target.get_field("labels").tolist() == [1, 2]
    assert target.bbox.tolist() == [[5.0, 10.0, 20.0, 30.0], [20.0, 40.0, 24.0, 44.0]]


def test_corrupt_image_skipped_or_raised(coco_files, caplog):
    ann_file, root, _ = coco_files
    ds = COCODataset(ann_file, root, remove_images_without_annotations=True)
    with caplog.at_level(logging.WARNING):
        img, target, idx = ds[2]  # 4.png is corrupt: the next readable image (index 0) instead
    assert idx == 0 and ds.num_bad_images == 1 and "4.png" in caplog.text
    assert img.shape == (30, 40, 3)
    strict = COCODataset(
        ann_file, root, remove_images_without_annotations=True, skip_bad_images=False
    )
    with pytest.raises(OSError, match="4.png"):
        strict[2]


def test_truncated_jpeg_skipped_or_raised(coco_files, caplog):
    """A JPEG cut short decodes without error in OpenCV; the dataset still treats it as bad."""
    ann_file, root, _ = coco_files
    ds = COCODataset(ann_file, root, remove_images_without_annotations=True)
    path = os.path.join(root, ds.get_img_info(0)["file_name"])
    image = cv2.imread(path)
    cut = os.path.join(root, "cut.jpg")
    cv2.imwrite(cut, image)
    with open(cut, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    ds.coco.imgs[ds.id_to_img_map[0]]["file_name"] = "cut.jpg"
    with caplog.at_level(logging.WARNING):
        _, _, idx = ds[0]
    assert idx == 1 and ds.num_bad_images == 1 and "cut.jpg" in caplog.text
    ds.skip_bad_images = False
    with pytest.raises(OSError, match=r"cut\.jpg.*DATASETS.SKIP_BAD_IMAGES"):
        ds[0]


def test_transforms_applied(coco_files):
    ann_file, root, _ = coco_files

    def double(image, target):
        h, w = image.shape[:2]
        return cv2.resize(image, (2 * w, 2 * h)), target.resize((2 * w, 2 * h))

    ds = COCODataset(ann_file, root, True, transforms=double)
    img, target, _ = ds[0]
    assert img.shape == (60, 80, 3) and target.bbox.tolist() == [[4.0, 6.0, 24.0, 22.0]]
