"""Pascal VOC detection (VOC2007, VOC2012) from a VOCdevkit, as boxes.

The layout is the devkit's: `<VOC2007>/ImageSets/Main/<split>.txt` lists image ids,
`<VOC2007>/Annotations/<id>.xml` holds each image's objects and `<VOC2007>/JPEGImages/<id>.jpg`
its image. The annotations are read into an in-memory COCO index, so training, COCO-style AP and
`detection.engine.voc_eval` all work from the same boxes:
- box `[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]` (xywh, 0-based): the devkit's
  1-based inclusive pixel corners as a continuous box, so `x2 = xmax`;
- "difficult" objects become `iscrowd` annotations: never a training target, ignored by the
  COCO-style AP as crowds are, and ignored by the VOC metric as the devkit does;
- each object also gets its box as a polygon "segmentation" (VOC detection has no masks): train
  and evaluate with `MODEL.MASK_ON False`.
"""

from __future__ import annotations

import contextlib
import io
import os
import xml.etree.ElementTree as ET
from typing import Any

from pycocotools.coco import COCO

from detection.data.datasets.coco import COCODataset
from detection.utils.cli import MissingInputError, UsageError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def _text(node: ET.Element, path: str, xml_path: str) -> str:
    found = node.find(path)
    if found is None or found.text is None:
        raise UsageError(f"VOC annotation {xml_path} has no <{path}>")
    return found.text.strip()


def read_voc_xml(xml_path: str) -> dict[str, Any]:
    """{"file_name", "width", "height", "objects": [{"name", "difficult", "bbox" (xmin, ymin,
    xmax, ymax), 1-based inclusive as in the file}]} of one devkit annotation file."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise UsageError(f"corrupt VOC annotation {xml_path}: {exc}") from None
    objects = []
    for obj in root.iter("object"):
        difficult = obj.find("difficult")
        box = tuple(float(_text(obj, f"bndbox/{k}", xml_path)) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(
            {
                "name": _text(obj, "name", xml_path).lower(),
                "difficult": int(difficult.text) if difficult is not None and difficult.text else 0,
                "bbox": box,
            }
        )
    return {
        "file_name": _text(root, "filename", xml_path),
        "width": int(float(_text(root, "size/width", xml_path))),
        "height": int(float(_text(root, "size/height", xml_path))),
        "objects": objects,
    }


def voc_to_coco_dict(voc_dir: str, split_file: str, classes=VOC_CLASSES) -> dict[str, Any]:
    """The COCO-format dict ("images", "annotations", "categories") of one devkit split."""
    if not os.path.isfile(split_file):
        raise MissingInputError(f"VOC split file not found: {split_file}")
    with open(split_file) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    cat_id = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    for image_id, name in enumerate(ids, 1):
        xml_path = os.path.join(voc_dir, "Annotations", f"{name}.xml")
        if not os.path.isfile(xml_path):
            raise MissingInputError(f"VOC annotation not found: {xml_path} (listed in {split_file})")
        info = read_voc_xml(xml_path)
        images.append(
            {
                "id": image_id,
                "file_name": os.path.join("JPEGImages", f"{name}.jpg"),
                "width": info["width"],
                "height": info["height"],
                "voc_id": name,
            }
        )
        for obj in info["objects"]:
            if obj["name"] not in cat_id:
                raise UsageError(f"{xml_path}: unknown VOC class {obj['name']!r}")
            x1, y1, x2, y2 = obj["bbox"]
            box = [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]
            bx, by, bw, bh = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_id[obj["name"]],
                    "bbox": box,
                    "area": bw * bh,
                    "iscrowd": obj["difficult"],
                    "segmentation": [[bx, by, bx + bw, by, bx + bw, by + bh, bx, by + bh]],
                }
            )
    categories = [{"id": i, "name": n} for n, i in cat_id.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


class PascalVOCDataset(COCODataset):
    """A VOCdevkit split as a COCODataset (see the module docstring).

    Args:
        ann_file: the split file, `<VOCyyyy>/ImageSets/Main/<split>.txt`.
        root: the `<VOCyyyy>` folder.
        the others: as COCODataset.
    """

    metric = "voc"  # detection.engine.inference adds the VOC metric for these datasets

    def _load_index(self, ann_file: str) -> COCO:
        coco = COCO()
        coco.dataset = voc_to_coco_dict(self.root, ann_file)
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def voc_ground_truth(self) -> dict[int, list[dict[str, Any]]]:
        """Per image id: {"category_id", "bbox" xyxy, "difficult"} of every object."""
        out: dict[int, list[dict[str, Any]]] = {i: [] for i in self.coco.imgs}
        for ann in self.coco.dataset["annotations"]:
            x, y, w, h = ann["bbox"]
            out[ann["image_id"]].append(
                {
                    "category_id": ann["category_id"],
                    "bbox": (x, y, x + w, y + h),
                    "difficult": bool(ann["iscrowd"]),
                }
            )
        return out
