#!/usr/bin/env python
"""Compare an exported ONNX detector (onnxruntime or OpenVINO) with the PyTorch model on the images of the
first of DATASETS.TEST, and print the worst case.

    python tools/onnx_parity.py --config FILE --ckpt PATH --model model.onnx [--limit N]
        [--backend onnxruntime|openvino] [KEY VALUE ...]

Both run through `Predictor` (the same resize, normalisation and mask pasting), one image at a
time, so the comparison is on what a user gets: boxes in original pixels, scores, labels and
pasted masks. Prints the number of images with another number of detections or other labels,
the worst box difference (relative to the coordinate, absolute below 1 px), the worst score
difference and the lowest pasted-mask IoU, each with its image; exit status 1 when the
acceptance (same labels, boxes within 1e-3 relative, scores within 1e-4, mask IoU > 0.99) fails.
Bad arguments or files: exit 2 with one `error:` line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree first

import detection  # noqa: E402, F401  (first: its OpenMP defaults must precede torch)

# isort: split

import torch

from detection.data.image_io import read_image_or_skip
from detection.utils import cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--ckpt", required=True, help="checkpoint or state dict")
    parser.add_argument("--model", required=True, help="ONNX file of tools/export.py")
    parser.add_argument(
        "--backend", default="onnxruntime", choices=("onnxruntime", "openvino"), help="its runtime"
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="threads of both runtimes")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config"
    )
    return parser.parse_args(argv)


def dataset_images(cfg) -> list[str]:
    """The image paths of the first of DATASETS.TEST, in the data set's order."""
    from detection.config.paths_catalog import DatasetCatalog
    from detection.data.datasets import COCODataset

    if not cfg.DATASETS.TEST:
        raise cli.UsageError("DATASETS.TEST is empty: nothing to compare on")
    name = cfg.DATASETS.TEST[0]
    known = DatasetCatalog.names(cfg)
    if name not in known:
        raise cli.UsageError(f"DATASETS.TEST: unknown data set {name}")
    img_dir, ann_file = (os.path.join(cfg.DATASETS.ROOT, p) for p in known[name])
    if not os.path.isfile(ann_file):
        raise cli.MissingInputError(f"DATASETS.TEST: {name}: no annotation file {ann_file}")
    ds = COCODataset(ann_file, img_dir, remove_images_without_annotations=False)
    return [os.path.join(ds.root, ds.get_img_info(i)["file_name"]) for i in range(len(ds))]


def run_parity(
    cfg, ckpt: str, model_path: str, limit: int = 0, threads: int = 1, backend: str = "onnxruntime"
):
    """The `ParityReport` of the ONNX file against the PyTorch model over the data set."""
    from detection.deploy.parity import ParityReport
    from detection.deploy.runtime import onnx_predictor, preprocess_mismatch
    from detection.engine.checkpoint_paths import resolve_checkpoint
    from detection.engine.checkpointer import Checkpointer
    from detection.engine.predictor import Predictor
    from detection.modeling import build_detection_model

    if not os.path.isfile(model_path):
        raise cli.MissingInputError(f"--model: {model_path} is not a file")
    torch.set_num_threads(threads)
    logger = logging.getLogger("detection.onnx_parity")
    model = build_detection_model(cfg)
    Checkpointer(model).load(resolve_checkpoint(ckpt, "--ckpt"))
    reference = Predictor.from_config(cfg, model, torch.device("cpu"))
    exported = onnx_predictor(model_path, threads, backend)
    mismatch = preprocess_mismatch(exported.model.metadata, cfg)
    if mismatch:
        raise cli.UsageError(f"--model: {model_path} was exported with " + "; ".join(mismatch))
    paths = dataset_images(cfg)
    if limit > 0:
        paths = paths[:limit]
    report = ParityReport()
    seconds = {"pytorch": 0.0, backend: 0.0}
    for path in paths:
        image = read_image_or_skip(path, skip=True, logger=logger)
        if image is None:
            continue
        t0 = time.perf_counter()
        a = reference(image)
        t1 = time.perf_counter()
        b = exported(image)
        seconds["pytorch"] += t1 - t0
        seconds[backend] += time.perf_counter() - t1
        report.add(os.path.basename(path), a, b)
    return report, seconds


@cli.cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    from detection.engine.setup import load_config

    cfg = load_config(args.config, args.opts, exit_on_error=True)
    report, seconds = run_parity(cfg, args.ckpt, args.model, args.limit, args.threads, args.backend)
    for line in report.lines():
        print(line)
    n = max(report.images, 1)
    print(
        f"seconds per image ({args.threads} thread(s), both pasting masks): "
        f"PyTorch {seconds['pytorch'] / n:.3f}, {args.backend} {seconds[args.backend] / n:.3f}"
    )
    ok = report.passes()
    print("acceptance (same labels, boxes 1e-3 relative, scores 1e-4, mask IoU > 0.99): " + (
        "passed" if ok else "FAILED"
    ))  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
