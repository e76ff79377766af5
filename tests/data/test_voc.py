"""Pascal VOC: a small VOCdevkit written here (XML annotations, split files, JPEGs), read through
the catalog, evaluated with the VOC metric (11-point and area) next to COCO-style AP, and a box
training (`MODEL.MASK_ON False`) with tools/train.py and tools/test.py."""

import importlib.util
import json
import logging
import os

import cv2
import numpy as np
import pytest

from detection.config import load_config
from detection.config.paths_catalog import DatasetCatalog
from detection.data.datasets.voc import VOC_CLASSES, PascalVOCDataset
from detection.engine.voc_eval import (
    average_precision,
    class_precision_recall,
    evaluate_voc,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (id, width, height, [(class, difficult, xmin, ymin, xmax, ymax)]) in the devkit's 1-based pixels
IMAGES = [
    ("000001", 64, 48, [("dog", 0, 5, 6, 30, 40), ("person", 0, 35, 2, 60, 44)]),
    ("000002", 56, 56, [("cat", 0, 10, 10, 40, 50), ("dog", 1, 1, 1, 12, 12)]),
    ("000003", 48, 64, [("person", 0, 4, 8, 44, 60)]),
    ("000004", 40, 40, [("car", 0, 3, 3, 38, 30)]),
]


def _xml(name, w, h, objects):
    objs = "".join(
        f"<object><name>{c}</name><pose>Left</pose><truncated>0</truncated>"
        f"<difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for c, d, x1, y1, x2, y2 in objects
    )
    return (
        f"<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objs}</annotation>"
    )


def write_voc(root, year="2007", splits=None):
    """A VOCdevkit under `root`/voc with the IMAGES; returns the year's folder."""
    base = os.path.join(root, "voc", f"VOC{year}")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    rng = np.random.RandomState(0)
    for name, w, h, objects in IMAGES:
        with open(os.path.join(base, "Annotations", f"{name}.xml"), "w") as f:
            f.write(_xml(name, w, h, objects))
        image = (rng.rand(h, w, 3) * 255).astype(np.uint8)
        for _, _, x1, y1, x2, y2 in objects:  # a bright box where each object is
            image[y1 - 1 : y2, x1 - 1 : x2] = 230
        cv2.imwrite(os.path.join(base, "JPEGImages", f"{name}.jpg"), image)
    splits = splits or {
        "train": ["000001", "000002", "000003"],
        "test": ["000001", "000002", "000004"],
    }
    for split, ids in splits.items():
        with open(os.path.join(base, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return base


@pytest.fixture()
def voc_root(tmp_path):
    write_voc(str(tmp_path))
    return str(tmp_path)


def _cfg(root, *opts):
    return load_config(None, ["DATASETS.ROOT", root, *opts])


def test_catalog_reads_the_xml(voc_root):
    entry = DatasetCatalog.get("voc_2007_train", _cfg(voc_root))
    assert entry["factory"] == "PascalVOCDataset"
    ds = PascalVOCDataset(remove_images_without_annotations=True, **entry["args"])
    assert len(ds) == 3 and sorted(ds.categories.values()) == sorted(VOC_CLASSES)
    img, target, idx = ds[0]
    assert img.shape == (48, 64, 3) and idx == 0
    # devkit (xmin, ymin, xmax, ymax) 1-based inclusive -> continuous xyxy (xmin - 1, ..., xmax)
    assert target.bbox.tolist() == [[4.0, 5.0, 30.0, 40.0], [34.0, 1.0, 60.0, 44.0]]
    names = [ds.categories[int(k)] for k in target.get_field("labels")]
    assert names == ["dog", "person"]
    _, target, _ = ds[1]  # the difficult dog is no training target
    assert [ds.categories[int(k)] for k in target.get_field("labels")] == ["cat"]


def test_all_splits_in_the_catalog():
    names = DatasetCatalog.names(_cfg("datasets"))
    for year, splits in (
        ("2007", ("train", "val", "trainval", "test")),
        ("2012", ("train", "val", "trainval")),
    ):
        for split in splits:
            img_dir, ann = names[f"voc_{year}_{split}"]
            assert img_dir == f"voc/VOC{year}" and ann.endswith(f"ImageSets/Main/{split}.txt")


def test_missing_devkit_says_how_to_link(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"voc_2012_trainval.*ln -s /path/to/VOCdevkit"):
        DatasetCatalog.get("voc_2012_trainval", _cfg(str(tmp_path)))


def test_average_precision_by_hand():
    """Two boxes; detections by score: hit, miss, hit. Precision 1, 1/2, 2/3 at recall 1/2, 1/2,
    1. 11-point: recall >= t for t <= 0.5 reaches precision 1 (6 points), for t >= 0.6 only 2/3
    (5 points): (6 + 5 * 2/3) / 11. Area: 1/2 * 1 + 1/2 * 2/3."""
    recall, precision, npos = class_precision_recall(
        [(1, 0.9, (0, 0, 10, 10)), (1, 0.8, (50, 50, 60, 60)), (1, 0.7, (20, 20, 30, 30))],
        {1: [((0, 0, 10, 10), False), ((20, 20, 30, 30), False)]},
    )
    assert npos == 2
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    ap11, ap = average_precision(recall, precision)
    assert ap11 == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_difficult_and_duplicates():
    gt = {1: [((0, 0, 10, 10), False), ((30, 30, 40, 40), True)]}
    # a detection on the difficult box is ignored; a second one on a matched box is a false positive
    recall, precision, npos = class_precision_recall(
        [(1, 0.9, (30, 30, 40, 40)), (1, 0.8, (0, 0, 10, 10)), (1, 0.7, (0, 0, 10, 9.5))], gt
    )
    assert npos == 1
    np.testing.assert_allclose(recall, [1.0, 1.0])
    np.testing.assert_allclose(precision, [1.0, 0.5])
    assert average_precision(recall, precision) == (1.0, 1.0)


def test_voc_metric_of_the_ground_truth_itself(voc_root):
    """The ground truth as detections scores 1.0 in both forms, whatever the difficult boxes."""
    entry = DatasetCatalog.get("voc_2007_test", _cfg(voc_root))
    ds = PascalVOCDataset(remove_images_without_annotations=False, **entry["args"])
    gt = ds.voc_ground_truth()
    results = [
        {"image_id": i, "category_id": o["category_id"], "score": 1.0,
         "bbox": [o["bbox"][0], o["bbox"][1], o["bbox"][2] - o["bbox"][0], o["bbox"][3] - o["bbox"][1]]}
        for i, objs in gt.items() for o in objs if not o["difficult"]
    ]  # fmt: skip
    names = {ds.contiguous_category_id_to_json_id[k]: v for k, v in ds.categories.items()}
    metrics = evaluate_voc(results, gt, names)
    assert metrics["mAP"] == 1.0 and metrics["mAP_11point"] == 1.0
    assert sorted(k for k in metrics if k.startswith("AP_")) == [
        "AP_car",
        "AP_cat",
        "AP_dog",
        "AP_person",
    ]
    del results[0]  # lose image 1's dog: dog recall 0 (the other dog is difficult)
    assert evaluate_voc(results, gt, names)["AP_dog"] == 0.0


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f"voc_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_box_training_and_evaluation_on_voc(voc_root, tmp_path):
    from detection import HAS_OPS

    if not HAS_OPS:
        pytest.skip("needs the compiled detection ops")
    import torch

    config = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes_tiny.yaml")
    ws = str(tmp_path / "ws")
    opts = [
        "MODEL.DEVICE", "cpu", "MODEL.MASK_ON", "False", "MODEL.ROI_HEADS.NUM_CLASSES", "21",
        "DATASETS.ROOT", voc_root, "DATASETS.TRAIN", "('voc_2007_train',)",
        "DATASETS.TEST", "('voc_2007_test',)", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)",
        "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.TEST_PERIOD", "0",
        "SOLVER.IMS_PER_BATCH", "2", "TEST.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.ROI_HEADS.SCORE_THRESH", "0.0", "WORKSPACE", ws,
    ]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logger = logging.getLogger("detection")
    state = (list(logger.handlers), logger.propagate, logger.level)
    try:
        assert _load_tool("train").main(["--config", config, *opts]) == 0
        assert (
            _load_tool("test").main(["--config", config, "--ckpt", ws, "--no-progress", *opts]) == 0
        )
    finally:
        torch.set_num_threads(threads)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in state[0]:
            logger.addHandler(handler)
        logger.propagate, logger.level = state[1], state[2]
    out = os.path.join(ws, "inference", "voc_2007_test")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert set(metrics) == {"bbox", "voc"}, "boxes only: no segm with MODEL.MASK_ON False"
    assert 0.0 <= metrics["voc"]["mAP"] <= 1.0 and 0.0 <= metrics["voc"]["mAP_11point"] <= 1.0
    assert 0.0 <= metrics["bbox"]["AP"] <= 1.0 or metrics["bbox"]["AP"] == -1.0
    with open(os.path.join(out, "voc.json")) as f:
        assert json.load(f)["mAP"] == metrics["voc"]["mAP"]
