"""tools/mnist_det_errors.py on a hand-made ground truth and results: each fraction counts what
its docstring says, and a bad workspace is one error line."""

import json
import os

import numpy as np
import pycocotools.mask as mask_utils

from testutils.tools import load_tool


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _stroke(y, x, h, w, size=64):
    """A 2-px frame (a '0') in the box (x, y, w, h): a third or so of its box."""
    m = np.zeros((size, size), bool)
    m[y : y + h, x : x + w] = True
    m[y + 2 : y + h - 2, x + 2 : x + w - 2] = False
    return m


def test_counts(tmp_path, capsys):
    digits = [_stroke(4, 4, 20, 12), _stroke(30, 30, 20, 12), _stroke(40, 4, 16, 10)]
    anns = []
    for i, m in enumerate(digits):
        rle = _rle(m)
        box = [float(v) for v in mask_utils.toBbox(rle)]
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1 + i, "segmentation": rle,
                     "area": box[2] * box[3], "bbox": box, "iscrowd": 0})  # fmt: skip
    gt = {"images": [{"id": 1, "height": 64, "width": 64, "file_name": "a.jpg"}],
          "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}  # fmt: skip
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    # digit 1: found, right class, exact mask; digit 2: found, wrong class, its box filled;
    # digit 3: missed (the detection is elsewhere)
    filled = np.zeros((64, 64), bool)
    filled[30:50, 30:42] = True
    dets = [
        (anns[0]["bbox"], 1, digits[0]),
        (anns[1]["bbox"], 3, filled),
        ([0, 50, 4, 4], 3, filled),
    ]
    bbox = [{"image_id": 1, "category_id": c, "bbox": b, "score": 0.9 - 0.1 * i}
            for i, (b, c, _) in enumerate(dets)]  # fmt: skip
    segm = [{"image_id": 1, "category_id": c, "segmentation": _rle(m), "score": 0.9 - 0.1 * i}
            for i, (_, c, m) in enumerate(dets)]  # fmt: skip
    folder = tmp_path / "ws" / "inference" / "mnist_det_val"
    folder.mkdir(parents=True)
    (folder / "bbox.json").write_text(json.dumps(bbox))
    (folder / "segm.json").write_text(json.dumps(segm))
    tool = load_tool("mnist_det_errors")
    assert tool.main([str(tmp_path / "ws"), "--ann", str(ann)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].strip("| ").split(" | ")
    fill_2 = digits[1].sum() / filled.sum()  # the stroke mask inside the filled box: its IoU
    assert row[0] == "ws"
    got = [float(v) for v in row[1:]]
    want = [2 / 3, 1 / 2, (1 + fill_2) / 2, 1 / 2, (digits[0].sum() / (20 * 12) + 1) / 2]
    np.testing.assert_allclose(got[:5], want, atol=1e-3)
    boxes = [a["bbox"][2] * a["bbox"][3] for a in anns]
    np.testing.assert_allclose(
        got[5], np.median([m.sum() / b for m, b in zip(digits, boxes)]), atol=1e-3
    )


def test_bad_workspace_is_one_error_line(tmp_path, capsys):
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    tool = load_tool("mnist_det_errors")
    assert tool.main([str(tmp_path / "nope"), "--ann", str(ann)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nope" in err[0]
    assert tool.main([str(tmp_path), "--ann", os.path.join(str(tmp_path), "missing.json")]) == 2
