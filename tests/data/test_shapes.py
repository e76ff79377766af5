"""The synthetic shapes generator: deterministic, a valid COCO dataset, visible masks only."""

import filecmp
import json
import os

import cv2
import numpy as np
from pycocotools.coco import COCO
import pytest

from detection.data.datasets.shapes import generate_shapes_dataset, generate_split
from testutils.tools import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _files(d):
    return sorted(os.path.relpath(os.path.join(p, f), d) for p, _, fs in os.walk(d) for f in fs)


def test_same_seed_same_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_shapes_dataset(str(a), 6, 2, seed=11, min_size=64, max_size=96)
    generate_shapes_dataset(str(b), 6, 2, seed=11, min_size=64, max_size=96)
    generate_split(str(c), "train", 6, seed=12, min_size=64, max_size=96)
    files = _files(a)
    assert files == _files(b) and len(files) == 2 + 6 + 2
    for f in files:
        assert filecmp.cmp(a / f, b / f, shallow=False), f
    assert not filecmp.cmp(
        a / "annotations/instances_train.json",
        c / "annotations/instances_train.json",
        shallow=False,
    )


def test_test_split_is_held_out(tmp_path):
    """The test split draws its own images: none repeats a val or train image of the same seed."""
    out = generate_shapes_dataset(str(tmp_path), 4, 4, seed=3, min_size=64, max_size=96, num_test=4)
    assert sorted(out) == ["test", "train", "val"]
    pixels = {}
    for split in out:
        for f in sorted(os.listdir(tmp_path / split)):
            pixels[(split, f)] = cv2.imread(str(tmp_path / split / f)).tobytes()
    assert len(pixels) == 12 and len(set(pixels.values())) == 12
    coco = COCO(out["test"])
    assert len(coco.imgs) == 4 and len(coco.anns) >= 4
    assert "test" not in generate_shapes_dataset(str(tmp_path / "none"), 1, 1, seed=3)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    generate_shapes_dataset(str(out), 40, 4, seed=0, min_size=96, max_size=160)
    return out


def test_valid_coco(shapes, capsys):
    coco = COCO(str(shapes / "annotations/instances_train.json"))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} >= {"circle", "square", "triangle"}
    assert len(coco.imgs) == 40
    counts = [len(coco.imgToAnns[i]) for i in coco.imgs]
    assert min(counts) >= 1 and max(counts) <= 6
    sides = []
    for img_id, info in coco.imgs.items():
        img = cv2.imread(str(shapes / "train" / info["file_name"]))
        assert img is not None and img.shape == (info["height"], info["width"], 3)
        assert 96 <= info["height"] <= 160 and 96 <= info["width"] <= 160
        union = np.zeros((info["height"], info["width"]), np.int32)
        for ann in coco.imgToAnns[img_id]:
            m = coco.annToMask(ann)
            assert ann["area"] == pytest.approx(float(m.sum()))  # area is the visible area
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(m)
            assert (
                xs.min() >= x and xs.max() + 1 <= x + w and ys.min() >= y and ys.max() + 1 <= y + h
            )
            assert ann["iscrowd"] == 0 and ann["area"] > 0
            union += m
            sides.append(np.sqrt(ann["area"]))
        # occlusion handled: visible parts of different objects (nearly) never overlap
        assert (union > 1).sum() <= 0.01 * (union > 0).sum() + 2
    assert min(sides) < 20 and max(sides) > 40  # small and large objects


def test_masks_match_pixels(shapes):
    """Every annotated mask covers pixels of (nearly) one colour: the visible object."""
    coco = COCO(str(shapes / "annotations/instances_val.json"))
    for img_id, info in coco.imgs.items():
        img = cv2.imread(str(shapes / "val" / info["file_name"])).astype(np.float32)
        for ann in coco.imgToAnns[img_id]:
            m = coco.annToMask(ann).astype(bool)
            inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if inner.sum() < 10:
                continue
            pix = img[inner]
            assert np.median(np.abs(pix - np.median(pix, 0)).sum(1)) < 30


def _load_tool():
    return load_tool("make_shapes")


def test_cli(tmp_path, capsys):
    tool = _load_tool()
    out = tmp_path / "cli"
    argv = [
        "--out",
        str(out),
        "--num-train",
        "3",
        "--num-val",
        "1",
        "--seed",
        "2",
        "--min-size",
        "64",
        "--max-size",
        "64",
    ]
    assert tool.main(argv) == 0
    data = json.loads((out / "annotations/instances_val.json").read_text())
    assert len(data["images"]) == 1 and data["images"][0]["width"] == 64
    assert len(os.listdir(out / "train")) == 3 and not (out / "test").exists()
    held = "--num-train 1 --num-val 1 --num-test 2 --min-size 64 --max-size 64".split()
    assert tool.main(["--out", str(tmp_path / "held"), *held]) == 0
    assert len(os.listdir(tmp_path / "held" / "test")) == 2
    assert tool.main(["--out", str(out), "--min-size", "300", "--max-size", "200"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--min-size" in err
