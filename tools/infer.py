#!/usr/bin/env python
"""Run a trained detector on images and draw the results.

    python tools/infer.py --config FILE --ckpt PATH --input PATH --output DIR [--score-threshold T]
    python tools/infer.py --backend onnxruntime --model model.onnx --input PATH --output DIR

`--backend onnxruntime` (or `openvino`) runs the ONNX file of `tools/export.py` instead of the PyTorch model: no
--config or --ckpt (the file carries the weights, the test-time resize and normalisation, the
thresholds and the class names), and neither the compiled ops nor the model code is imported;
masks are pasted on the host by the same code as the PyTorch predictor's
(`detection.deploy.runtime`, docs/deployment.md).

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
from detection.engine.predictor import detections_to_coco, draw_detections
from detection.utils import cli

# (no import of the model code here: --backend onnxruntime runs without it)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
BACKENDS = ("pytorch", "onnxruntime", "openvino")


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML config file (--backend pytorch)")
    parser.add_argument("--ckpt", help="checkpoint or state dict (--backend pytorch)")
    parser.add_argument(
        "--backend", default="pytorch", choices=BACKENDS, help="what runs the model"
    )
    parser.add_argument("--model", help="ONNX file of tools/export.py (--backend onnxruntime)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime/openvino threads")
    parser.add_argument("--input", help="image, folder or glob pattern (required)")
    parser.add_argument("--output", help="output folder (required)")
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
    args = parser.parse_args(argv)
    needed = ("config", "ckpt", "input", "output") if args.backend == "pytorch" else ("model",)
    missing = [f"--{f}" for f in needed + ("input", "output") if getattr(args, f) is None]
    if missing:
        what = "" if args.backend == "pytorch" else f" with --backend {args.backend}"
        names = ", ".join(dict.fromkeys(missing))
        raise cli.UsageError(f"the following arguments are required{what}: {names}")
    if args.backend == "pytorch":
        if args.model is not None:
            raise cli.UsageError("--model is for --backend onnxruntime; give --config and --ckpt")
    else:
        if args.config is not None or args.ckpt is not None or args.opts:
            raise cli.UsageError(
                f"--backend {args.backend} takes no --config, --ckpt or KEY VALUE pairs: the ONNX "
                "file carries the weights and the settings"
            )
    return args


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
    """Predict with the PyTorch model, draw and write everything; returns the path of
    detections.json."""
    from detection.engine.checkpoint_paths import resolve_checkpoint
    from detection.engine.checkpointer import Checkpointer
    from detection.engine.predictor import Predictor
    from detection.engine.setup import setup_runtime
    from detection.modeling import build_detection_model

    device, _, logger = setup_runtime(cfg, "infer")
    threshold = cfg.TEST.SCORE_THRESHOLD_VIS if score_threshold is None else score_threshold
    paths = list_images(inputs)
    ckpt = resolve_checkpoint(ckpt, "--ckpt")
    model = build_detection_model(cfg).to(device)
    Checkpointer(model, logger=logger).load(ckpt)
    predictor = Predictor.from_config(cfg, model, device)
    return predict_and_write(predictor, category_info(cfg), paths, output, threshold, limit, logger)


def run_infer_onnx(
    model_path: str,
    inputs: str,
    output: str,
    score_threshold: float | None = None,
    limit: int = 0,
    threads: int = 1,
    backend: str = "onnxruntime",
) -> str:
    """Predict with the ONNX file in onnxruntime or OpenVINO (no compiled ops, no model code),
    draw and write everything; returns the path of detections.json."""
    from detection.deploy.runtime import onnx_predictor
    from detection.utils.logger import setup_logger

    logger = setup_logger("detection", save_dir="", distributed_rank=0)
    if not os.path.isfile(model_path):
        raise cli.MissingInputError(f"--model: {model_path} is not a file")
    paths = list_images(inputs)
    try:
        predictor = onnx_predictor(model_path, threads, backend)
    except Exception as exc:  # the runtimes' errors on a bad file are not ValueErrors
        raise cli.UsageError(f"--model: {model_path}: {str(exc).splitlines()[0]}") from None
    meta = predictor.model.metadata
    threshold = meta["score_threshold_vis"] if score_threshold is None else score_threshold
    logger.info("infer: %s in %s (%d threads)", model_path, backend, threads)
    return predict_and_write(
        predictor, predictor.model.class_info(), paths, output, threshold, limit, logger
    )


def predict_and_write(
    predictor, classes: tuple[dict, dict], paths: list[str], output: str, threshold: float,
    limit: int, logger,
) -> str:  # fmt: skip
    """Run `predictor` on each image of `paths` (the first `limit` when > 0), write the drawn
    images and DIR/detections.json; returns its path. `classes`: (label -> name, label -> JSON
    category id)."""
    class_names, to_json_id = classes
    if limit > 0:
        paths = paths[:limit]
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
    if args.backend != "pytorch":
        run_infer_onnx(
            args.model,
            args.input,
            args.output,
            args.score_threshold,
            args.limit,
            args.threads,
            args.backend,
        )
        return 0
    from detection.engine.setup import load_config

    cfg = load_config(args.config, args.opts, exit_on_error=True)
    run_infer(cfg, args.ckpt, args.input, args.output, args.score_threshold, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
