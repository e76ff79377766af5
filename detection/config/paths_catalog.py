"""Dataset names -> files. Every path is relative to `DATASETS.ROOT` (default "datasets").

Built-in names: coco_2017_{train,val}, coco_2014_{train,val,minival,valminusminival} (the usual
`ROOT/coco/{annotations,train2017,val2017,train2014,val2014}` layout, see datasets/README.md),
shapes_{train,val,test} (`ROOT/shapes`; the data layer generates it when missing,
`detection.data.build.resolve_dataset`; test is a held-out split, generated when first named),
mnist_det_{train,val} (`ROOT/mnist_det`, generated the same way from the MNIST digits),
voc_2007_{train,val,trainval,test} and voc_2012_{train,val,trainval} (a VOCdevkit linked as
`ROOT/voc`, read by `detection.data.datasets.voc.PascalVOCDataset`). More COCO-format sets come
from DATASETS.EXTRA = ((name, annotation file, image folder), ...).
"""

from __future__ import annotations

import os
from typing import Dict, Tuple


class DatasetCatalog:
    """`DatasetCatalog.get(name, cfg)` -> {"factory": "COCODataset", "args": {root, ann_file}}."""

    # name -> (image folder, annotation file), relative to DATASETS.ROOT
    DATASETS: Dict[str, Tuple[str, str]] = {
        "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
        "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
        "coco_2014_train": ("coco/train2014", "coco/annotations/instances_train2014.json"),
        "coco_2014_val": ("coco/val2014", "coco/annotations/instances_val2014.json"),
        "coco_2014_minival": ("coco/val2014", "coco/annotations/instances_minival2014.json"),
        "coco_2014_valminusminival": (
            "coco/val2014",
            "coco/annotations/instances_valminusminival2014.json",
        ),
        "shapes_train": ("shapes/train", "shapes/annotations/instances_train.json"),
        "shapes_val": ("shapes/val", "shapes/annotations/instances_val.json"),
        "shapes_test": ("shapes/test", "shapes/annotations/instances_test.json"),
        "mnist_det_train": ("mnist_det/train", "mnist_det/annotations/instances_train.json"),
        "mnist_det_val": ("mnist_det/val", "mnist_det/annotations/instances_val.json"),
        # Pascal VOC (a VOCdevkit linked as ROOT/voc): the year's folder and its split file
        **{
            f"voc_{year}_{split}": (f"voc/VOC{year}", f"voc/VOC{year}/ImageSets/Main/{split}.txt")
            for year, splits in (
                ("2007", ("train", "val", "trainval", "test")),
                ("2012", ("train", "val", "trainval")),
            )
            for split in splits
        },
    }

    @staticmethod
    def names(cfg) -> Dict[str, Tuple[str, str]]:
        """All known names (built-ins and DATASETS.EXTRA) -> (image folder, annotation file)."""
        out = dict(DatasetCatalog.DATASETS)
        for entry in cfg.DATASETS.EXTRA:
            if len(entry) != 3:
                raise ValueError(
                    f"DATASETS.EXTRA entries are (name, ann_file, img_dir), got {tuple(entry)!r}"
                )
            name, ann_file, img_dir = entry
            out[str(name)] = (str(img_dir), str(ann_file))
        return out

    @staticmethod
    def get(name: str, cfg) -> Dict:
        """Resolve `name` under DATASETS.ROOT (the files must exist; this only looks them up)."""
        known = DatasetCatalog.names(cfg)
        if name not in known:
            raise KeyError(
                f"unknown dataset {name!r} (DATASETS.TRAIN/TEST); known: {sorted(known)}; "
                "register others with DATASETS.EXTRA"
            )
        root = cfg.DATASETS.ROOT
        img_dir, ann_file = (os.path.join(root, p) for p in known[name])
        _check_exists(name, root, img_dir, ann_file)
        return {"factory": factory_for(name), "args": {"root": img_dir, "ann_file": ann_file}}


def factory_for(name: str) -> str:
    """The dataset class that reads `name`: "PascalVOCDataset" for voc_*, else "COCODataset"."""
    return "PascalVOCDataset" if name.startswith("voc_") else "COCODataset"


def _check_exists(name: str, root: str, img_dir: str, ann_file: str) -> None:
    missing = [p for p in (img_dir, ann_file) if not os.path.exists(p)]
    if not missing:
        return
    what = " and ".join(repr(p) for p in missing)
    msg = f"dataset {name!r} is missing {what} (DATASETS.ROOT = {root!r})."
    if name.startswith("coco_"):
        msg += (
            f" Link your COCO copy: `ln -s /path/to/coco {os.path.join(root, 'coco')}` with "
            "annotations/instances_*.json and train2017/, val2017/, train2014/, val2014/ inside "
            "(see datasets/README.md)."
        )
    elif name.startswith("voc_"):
        msg += (
            f" Link your VOCdevkit: `ln -s /path/to/VOCdevkit {os.path.join(root, 'voc')}` with "
            "VOC2007/ and VOC2012/ inside, each holding Annotations/, ImageSets/Main/ and "
            "JPEGImages/ (see datasets/README.md)."
        )
    elif name.startswith("shapes_"):
        msg += (
            f" Delete the incomplete {os.path.join(root, 'shapes')} to regenerate it, or run "
            f"`python tools/make_shapes.py --out {os.path.join(root, 'shapes')}`."
        )
    else:
        msg += " Check its DATASETS.EXTRA entry (paths are relative to DATASETS.ROOT)."
    raise FileNotFoundError(msg)
