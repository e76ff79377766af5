"""COCO-format instance-segmentation dataset (pycocotools).

`dataset[i]` returns `(image, target, i)`:
- image: without transforms the OpenCV image, `np.ndarray[H, W, 3]` uint8 in BGR order; the
  standard transforms turn it into a `Tensor[3, H', W']` float, BGR 0-255 normalised by
  INPUT.PIXEL_MEAN / PIXEL_STD (RGB 0-1 when INPUT.TO_BGR255 is False).
- target: `BoxList` (xyxy, size = (w, h) of the image) with fields "labels" (`Tensor[N]` int64,
  contiguous ids 1..C) and "masks" (`SegmentationMask`, polygons; binary when an image has RLE
  annotations). Crowd annotations are never in targets.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.coco import COCO

from detection.data.image_io import BadImageError, read_image
from detection.structures.bounding_box import BoxList
from detection.structures.segmentation_mask import SegmentationMask
from detection.utils.cli import MissingInputError, UsageError

logger = logging.getLogger(__name__)


def _valid_polygons(segm: Any) -> List[List[float]]:
    return [p for p in segm if len(p) >= 6 and len(p) % 2 == 0]


def annotation_problem(ann: Dict, width: int, height: int) -> Optional[str]:
    """Why a (non-crowd) annotation is unusable for training, or None when it is fine."""
    x, y, w, h = ann.get("bbox", (0, 0, 0, 0))
    if w <= 1 or h <= 1:
        return "box width or height <= 1"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "box outside the image"
    segm = ann.get("segmentation")
    if isinstance(segm, list) and not _valid_polygons(segm):
        return "empty polygon"
    if not isinstance(segm, (list, dict)):
        return "no segmentation"
    return None


def load_coco_json(ann_file: str) -> COCO:
    """pycocotools' COCO index of `ann_file`; a missing, corrupt or non-COCO file raises an
    error naming it (pycocotools' own errors do not)."""
    if not os.path.isfile(ann_file):
        raise MissingInputError(f"annotation file not found: {ann_file}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(ann_file)
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise UsageError(
            f"corrupt annotation file {ann_file}: not valid JSON ({exc}); restore or regenerate it"
        ) from None
    except (KeyError, TypeError, AssertionError) as exc:
        raise UsageError(
            f"annotation file {ann_file} is not in COCO format (problem at {exc!r}); "
            "it needs 'images', 'annotations' and 'categories'"
        ) from None


class COCODataset(torch.utils.data.Dataset):
    """Images and instance annotations of a COCO JSON file.

    Args:
        ann_file: the instances JSON.
        root: folder holding the images (`file_name` is relative to it).
        remove_images_without_annotations: drop images with no valid non-crowd annotation
            (True for training, False for evaluation so every image is scored).
        transforms: callable `(image, target) -> (image, target)` or None.
        skip_bad_images: unreadable images are logged, counted and replaced by the next
            readable one (True) or raise an OSError (False).
    """

    def __init__(
        self,
        ann_file: str,
        root: str,
        remove_images_without_annotations: bool,
        transforms: Optional[Callable] = None,
        skip_bad_images: bool = True,
    ) -> None:
        self.ann_file = ann_file
        self.root = root
        self.coco = self._load_index(ann_file)
        self._transforms = transforms
        self.skip_bad_images = skip_bad_images
        self.num_bad_images = 0
        cat_ids = sorted(self.coco.getCatIds())
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.contiguous_category_id_to_json_id = {
            v: k for k, v in self.json_category_id_to_contiguous_id.items()
        }
        self.categories = {
            self.json_category_id_to_contiguous_id[c]: self.coco.cats[c]["name"] for c in cat_ids
        }
        self._anns, self.num_invalid_annotations = self._filter_annotations()
        ids = sorted(self.coco.imgs.keys())
        if remove_images_without_annotations:
            ids = [i for i in ids if len(self._anns[i]) > 0]
        self.ids = ids
        self.id_to_img_map = {k: v for k, v in enumerate(self.ids)}

    def _load_index(self, ann_file: str) -> COCO:
        """The pycocotools index of the annotations (subclasses read other formats)."""
        return load_coco_json(ann_file)

    def _filter_annotations(self) -> Tuple[Dict[int, List[Dict]], int]:
        """Per image id, the usable non-crowd annotations; warns once with the invalid count."""
        out: Dict[int, List[Dict]] = {}
        problems: Dict[str, int] = {}
        for img_id, info in self.coco.imgs.items():
            keep = []
            for ann in self.coco.imgToAnns.get(img_id, []):
                if ann.get("iscrowd", 0):
                    continue
                why = annotation_problem(ann, info["width"], info["height"])
                if why is None:
                    keep.append(ann)
                else:
                    problems[why] = problems.get(why, 0) + 1
            out[img_id] = keep
        count = sum(problems.values())
        if count:
            logger.warning(
                "%s: skipped %d invalid annotations (%s)",
                self.ann_file,
                count,
                ", ".join(f"{k}: {v}" for k, v in sorted(problems.items())),
            )
        return out, count

    def __len__(self) -> int:
        return len(self.ids)

    def get_img_info(self, index: int) -> Dict[str, Any]:
        """{"height", "width", "id", "file_name"} of image `index` (from the JSON)."""
        return self.coco.imgs[self.id_to_img_map[index]]

    def _read(self, index: int) -> Optional[np.ndarray]:
        path = os.path.join(self.root, self.get_img_info(index)["file_name"])
        try:
            return read_image(path)
        except BadImageError as exc:
            if not self.skip_bad_images:
                raise BadImageError(f"{exc} (set DATASETS.SKIP_BAD_IMAGES True to skip)") from None
            self.num_bad_images += 1
            logger.warning(
                "%s, skipped (%d unreadable so far in this process)", exc, self.num_bad_images
            )
        return None

    def __getitem__(self, index: int) -> Tuple[Any, BoxList, int]:
        for step in range(len(self)):
            i = (index + step) % len(self)
            img = self._read(i)
            if img is not None:
                break
        else:
            raise OSError(f"no readable image in {self.root}")
        target = self.get_target(i, (img.shape[1], img.shape[0]))
        if self._transforms is not None:
            img, target = self._transforms(img, target)
        return img, target, i

    def get_target(self, index: int, size: Tuple[int, int]) -> BoxList:
        """The BoxList ("labels", "masks") of image `index` for an image of `size` = (w, h)."""
        anns = self._anns[self.id_to_img_map[index]]
        boxes = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = BoxList(boxes, size, mode="xywh").convert("xyxy")
        labels = [self.json_category_id_to_contiguous_id[a["category_id"]] for a in anns]
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        target.add_field("masks", self._masks(anns, size))
        return target.clip_to_image(remove_empty=True)

    @staticmethod
    def _masks(anns: List[Dict], size: Tuple[int, int]) -> SegmentationMask:
        segms = [a["segmentation"] for a in anns]
        if all(isinstance(s, list) for s in segms):
            return SegmentationMask([_valid_polygons(s) for s in segms], size, mode="poly")
        w, h = size
        rles = []
        for s in segms:
            if isinstance(s, list):
                rles.append(mask_utils.merge(mask_utils.frPyObjects(_valid_polygons(s), h, w)))
            elif isinstance(s["counts"], list):
                rles.append(mask_utils.frPyObjects(s, h, w))
            else:
                rles.append(s)
        return SegmentationMask(rles, size, mode="mask")
