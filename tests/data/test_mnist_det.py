"""The digit-detection set: canvases, stroke masks, COCO JSON, determinism, the catalog hook."""

import json
import os

import numpy as np
from pycocotools.coco import COCO
import pycocotools.mask as mask_utils
import pytest

from detection.data.datasets import mnist_det as M
from detection.data.datasets.coco import COCODataset
from detection.data.datasets.mnist import load_mnist

SHARED_MNIST = os.path.realpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), *[".."] * 3, "shared", "data", "mnist")
)
pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SHARED_MNIST, "SHA256SUMS")),
    reason=f"the digit-detection set needs real MNIST: the shared copy {SHARED_MNIST} is absent",
)


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def det_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("det") / "mnist_det")
    M.generate_mnist_det_dataset(out, SHARED_MNIST, num_train=4, num_val=3, seed=5)
    return out


def test_coco_json_and_masks(det_dir):
    for split, n in (("train", 4), ("val", 3)):
        ann_file = os.path.join(det_dir, "annotations", f"instances_{split}.json")
        coco = COCO(ann_file)
        assert len(coco.imgs) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [str(d) for d in range(10)]
        for img_id, info in coco.imgs.items():
            anns = coco.imgToAnns[img_id]
            assert 1 <= len(anns) <= 6
            for a in anns:
                m = mask_utils.decode(a["segmentation"])
                assert m.shape == (info["height"], info["width"]) and m.sum() > 0
                ys, xs = np.nonzero(m)
                x, y, w, h = a["bbox"]
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
                assert a["area"] == w * h  # the box area (COCOeval's size ranges)
                assert 1 <= a["category_id"] <= 10
    # a mask is the strokes, not the box: far less than the box is covered
    anns = COCO(os.path.join(det_dir, "annotations", "instances_val.json")).dataset["annotations"]
    fill = [mask_utils.area(a["segmentation"]) / a["area"] for a in anns if a["bbox"][3] >= 30]
    assert fill and max(fill) < 0.8


def test_deterministic_and_seed_dependent(det_dir, tmp_path):
    again = str(tmp_path / "again")
    M.generate_split(again, "val", 3, 5, SHARED_MNIST)
    a = _load_json(os.path.join(det_dir, "annotations", "instances_val.json"))
    b = _load_json(os.path.join(again, "annotations", "instances_val.json"))
    assert a["annotations"] == b["annotations"]
    for name in os.listdir(os.path.join(again, "val")):
        assert _read(os.path.join(again, "val", name)) == _read(os.path.join(det_dir, "val", name))
    other = str(tmp_path / "other")
    M.generate_split(other, "val", 3, 6, SHARED_MNIST)
    c = _load_json(os.path.join(other, "annotations", "instances_val.json"))
    assert c["annotations"] != a["annotations"]


def test_sizes_span_and_overlap():
    pool, labels = load_mnist(SHARED_MNIST, "train")
    heights, overlapped = [], 0
    for i in range(30):
        rng = np.random.default_rng([0, 0, i])
        _, objects = M.render_canvas(rng, pool, labels, 130, 130, 12, 120)  # just fits 120 px
        heights += [np.ptp(np.nonzero(o["full"].any(1))[0]) + 1 for o in objects]
        overlapped += sum(int((o["visible"] != o["full"]).any()) for o in objects)
        for o in objects:  # at least half of every digit stays visible
            assert o["visible"].sum() >= 0.5 * o["full"].sum()
    assert min(heights) <= 20 and max(heights) >= 100  # the 12-120 px range is used
    assert overlapped > 0


def test_loads_through_coco_dataset(det_dir):
    ds = COCODataset(
        os.path.join(det_dir, "annotations", "instances_train.json"),
        os.path.join(det_dir, "train"),
        remove_images_without_annotations=True,
    )
    img, target, _ = ds[0]
    assert img.shape[2] == 3 and len(target) > 0
    masks = target.get_field("masks").get_mask_tensor()
    assert masks.shape[-2:] == img.shape[:2] and masks.sum() > 0


def test_data_layer_generates_on_first_use(tmp_path, monkeypatch):
    from detection.config import cfg as default_cfg
    from detection.data.build import resolve_dataset

    os.symlink(SHARED_MNIST, tmp_path / "mnist")
    monkeypatch.setitem(M.DEFAULTS, "num_train", 2)
    monkeypatch.setitem(M.DEFAULTS, "num_val", 2)
    cfg = default_cfg.clone()
    cfg.defrost()
    cfg.DATASETS.ROOT = str(tmp_path)
    got = resolve_dataset("mnist_det_val", cfg)
    assert got["args"]["ann_file"] == str(tmp_path / "mnist_det/annotations/instances_val.json")
    assert len(_load_json(got["args"]["ann_file"])["images"]) == 2
    assert sorted(os.listdir(tmp_path)) == ["mnist", "mnist_det"]  # no temporary folder left
