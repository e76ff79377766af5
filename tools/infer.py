#!/usr/bin/env python
"""Run a trained detector on images and draw the results.

    python tools/infer.py --config FILE --ckpt PATH --input PATH --output DIR [--score-threshold T]

--input is an image, a folder (its .png/.jpg/.jpeg/.bmp files) or a glob pattern. For each image
DIR gets `<name>.png` with masks (coloured overlay), boxes, class names and scores drawn, and
DIR/detections.json holds every detection in COCO style ("images", "categories", "annotations"
with "score", "bbox" [x, y, w, h] and RLE "segmentation"). A truncated or corrupt image is
skipped with a warning naming it. --ckpt may be a checkpoint, a last_checkpoint pointer, a folder
or a WORKSPACE. Bad arguments or files: exit 2 with one `error:` line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree first

import detection  # noqa: E402, F401  (first: its OpenMP defaults must precede torch)

# isort: split

import cv2

from detection.data.image_io import read_image_or_skip
from detection.engine.checkpoint_paths import resolve_checkpoint
from detection.engine.checkpointer import Checkpointer
from detection.engine.predictor import Predictor, detections_to_coco, draw_detections
from detection.engine.setup import load_config, setup_runtime
from detection.utils import cli

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--ckpt", required=True, help="checkpoint or state dict")
    parser.add_argument("--input", required=True, help="image, folder or glob pattern")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="draw/keep detections scoring at least this (default TEST.SCORE_THRESHOLD_VIS)",
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config"
    )
    return parser.parse_args(argv)


def list_images(spec: str) -> list[str]:
    """The images an --input names: a file, a folder's image files, or a glob's matches (sorted)."""
    kinds = "/".join(IMAGE_EXTENSIONS)
    if os.path.isdir(spec):
        paths = [os.path.join(spec, n) for n in os.listdir(spec)]
        what = f"folder {spec} has no {kinds} files"
    elif os.path.isfile(spec):
        return [spec]
    else:
        paths = glob.glob(spec)
        what = f"{spec} is no file, folder, or glob matching {kinds} files"
    paths = sorted(p for p in paths if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise cli.MissingInputError(f"--input: {what}: give an image, a folder of images or a glob")
    return paths


def category_info(cfg) -> tuple[dict[int, str], dict[int, int]]:
    """(contiguous label -> class name, contiguous label -> JSON category id) from the annotation
    file of the first of DATASETS.TEST (or TRAIN) when it exists; numbered names otherwise."""
    from detection.config.paths_catalog import DatasetCatalog, factory_for
    from detection.data.datasets import COCODataset, PascalVOCDataset

    known = DatasetCatalog.names(cfg)
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        if name not in known:
            continue
        img_dir, ann_file = (os.path.join(cfg.DATASETS.ROOT, p) for p in known[name])
        if os.path.isfile(ann_file):
            cls = PascalVOCDataset if factory_for(name) == "PascalVOCDataset" else COCODataset
            ds = cls(ann_file, img_dir, remove_images_without_annotations=False)
            return dict(ds.categories), dict(ds.contiguous_category_id_to_json_id)
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    return {i: f"class {i}" for i in range(1, n)}, {i: i for i in range(1, n)}


def run_infer(
    cfg, ckpt: str, inputs: str, output: str, score_threshold: float | None = None, limit: int = 0
) -> str:
    """Predict, draw and write everything; returns the path of detections.json."""
    from detection.modeling import build_detection_model

    device, _, logger = setup_runtime(cfg, "infer")
    threshold = cfg.TEST.SCORE_THRESHOLD_VIS if score_threshold is None else score_threshold
    paths = list_images(inputs)
    if limit > 0:
        paths = paths[:limit]
    ckpt = resolve_checkpoint(ckpt, "--ckpt")
    model = build_detection_model(cfg).to(device)
    Checkpointer(model, logger=logger).load(ckpt)
    predictor = Predictor.from_config(cfg, model, device)
    class_names, to_json_id = category_info(cfg)
    os.makedirs(output, exist_ok=True)
    images, annotations = [], []
    start = time.perf_counter()
    for image_id, path in enumerate(paths, 1):
        image = read_image_or_skip(path, skip=True, logger=logger)  # warns naming the file
        if image is None:
            continue
        prediction = predictor(image)
        drawn = draw_detections(image, prediction, class_names, threshold)
        out_path = os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out_path, drawn)
        images.append(
            {
                "id": image_id,
                "file_name": os.path.abspath(path),
                "height": image.shape[0],
                "width": image.shape[1],
            }
        )
        records = detections_to_coco(
            prediction, image_id, to_json_id, threshold, first_id=len(annotations) + 1
        )
        annotations += records
        logger.info("%s: %d detections >= %.2f -> %s", path, len(records), threshold, out_path)
    categories = [{"id": to_json_id[k], "name": class_names[k]} for k in sorted(class_names)]
    json_path = os.path.join(output, "detections.json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "categories": categories, "annotations": annotations}, f)
    logger.info(
        "%d images in %.1f s; detections in %s", len(images), time.perf_counter() - start, json_path
    )
    return json_path


@cli.cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts, exit_on_error=True)
    run_infer(cfg, args.ckpt, args.input, args.output, args.score_threshold, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
