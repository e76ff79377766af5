#!/usr/bin/env python
"""Evaluate a trained detector on DATASETS.TEST (COCO bbox and segm AP).

    python tools/test.py --config FILE [--ckpt PATH] [KEY VALUE ...]
    torchrun --nproc_per_node=N tools/test.py --config FILE --ckpt PATH
    python tools/test.py --config FILE --backend onnxruntime --model model.onnx [KEY VALUE ...]

Writes bbox.json, segm.json (COCO results) and metrics.json under WORKSPACE/inference/<dataset>/.
--ckpt defaults to WORKSPACE/final/model_final.pth, else the last checkpoint in WORKSPACE/model;
it may name a checkpoint, a last_checkpoint pointer, a folder of checkpoints or a WORKSPACE.
Exit status 2 with one `error:` line for bad arguments, a missing or unreadable file or a
checkpoint of another kind.
`--backend onnxruntime` (or `openvino`) evaluates the ONNX file of `tools/export.py` in that
runtime (CPU, one process, each image alone) on the same data and with the same COCO evaluation; the config then
gives the data set and must have the test-time INPUT.* the file was exported with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree first

import detection  # noqa: E402, F401  (first: its OpenMP defaults must precede torch)

# isort: split

import torch

from detection.engine import checkpoint_paths
from detection.engine.checkpointer import Checkpointer
from detection.engine.setup import load_config, run_evaluation, setup_runtime
from detection.utils import cli, comm


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--ckpt", default="", help="checkpoint or state dict to evaluate")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument(
        "--backend",
        default="pytorch",
        choices=("pytorch", "onnxruntime", "openvino"),
        help="what runs the model",
    )
    parser.add_argument("--model", help="ONNX file of tools/export.py (--backend onnxruntime)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime/openvino threads")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config"
    )
    args = parser.parse_args(argv)
    if args.backend != "pytorch" and (args.model is None or args.ckpt):
        raise cli.UsageError(f"--backend {args.backend} needs --model model.onnx, takes no --ckpt")
    if args.backend == "pytorch" and args.model is not None:
        raise cli.UsageError("--model is for --backend onnxruntime (PyTorch takes --ckpt)")
    return args


def resolve_checkpoint(cfg, ckpt: str) -> str:
    """--ckpt (a file, a last_checkpoint pointer, a folder or a WORKSPACE:
    `detection.engine.checkpoint_paths.resolve_checkpoint`), or WORKSPACE/final/model_final.pth,
    or WORKSPACE/model/last_checkpoint's target."""
    if ckpt:
        return checkpoint_paths.resolve_checkpoint(ckpt, "--ckpt")
    final = os.path.join(cfg.WORKSPACE, "final", "model_final.pth")
    if os.path.isfile(final):
        return final
    last = Checkpointer(
        torch.nn.Module(), save_dir=os.path.join(cfg.WORKSPACE, "model")
    ).get_checkpoint_file()
    if last is None:
        raise cli.MissingInputError(
            f"no --ckpt given and no checkpoint under WORKSPACE {cfg.WORKSPACE}: train first or "
            "give --ckpt"
        )
    return last


def evaluate(cfg, ckpt: str = "", progress: bool = True) -> dict:
    """Load the weights and evaluate on each of DATASETS.TEST; returns {dataset: metrics} (rank 0)."""
    from detection.modeling import build_detection_model

    device, distributed, logger = setup_runtime(
        cfg, "test", log_dir=os.path.join(cfg.WORKSPACE, "inference")
    )
    path = resolve_checkpoint(cfg, ckpt)
    model = build_detection_model(cfg).to(device)
    Checkpointer(model, logger=logger).load(path)
    results = run_evaluation(cfg, model, device, distributed, logger, progress=progress)
    if comm.is_main_process():
        for name, metrics in results.items():
            out = os.path.join(cfg.WORKSPACE, "inference", name)
            logger.info("%s: %s (written to %s)", name, json.dumps(metrics), out)
    return results


def evaluate_onnx(
    cfg, model_path: str, threads: int = 1, progress: bool = True, backend: str = "onnxruntime"
) -> dict:
    """Evaluate the ONNX file in `backend` (onnxruntime or openvino) on each of DATASETS.TEST,
    as `evaluate` does the PyTorch model; returns {dataset: metrics}. A file exported with other
    test-time INPUT.* than the config's is refused (UsageError)."""
    from detection.deploy.runtime import exported_detector, preprocess_mismatch

    if not os.path.isfile(model_path):
        raise cli.MissingInputError(f"--model: {model_path} is not a file")
    if comm.get_world_size() > 1:
        raise cli.UsageError(f"--backend {backend} runs in one process: no torchrun")
    try:
        model = exported_detector(model_path, backend, threads)
    except Exception as exc:  # the runtimes' errors on a bad file are not ValueErrors
        raise cli.UsageError(f"--model: {model_path}: {str(exc).splitlines()[0]}") from None
    mismatch = preprocess_mismatch(model.metadata, cfg)
    if mismatch:
        raise cli.UsageError(f"--model: {model_path} was exported with " + "; ".join(mismatch))
    device, distributed, logger = setup_runtime(
        cfg, "test", log_dir=os.path.join(cfg.WORKSPACE, "inference")
    )
    logger.info("test: %s in %s (%d threads)", model_path, backend, threads)
    results = run_evaluation(cfg, model, torch.device("cpu"), False, logger, progress=progress)
    for name, metrics in results.items():
        out = os.path.join(cfg.WORKSPACE, "inference", name)
        logger.info("%s: %s (written to %s)", name, json.dumps(metrics), out)
    return results


@cli.cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts, exit_on_error=True)
    if args.backend != "pytorch":
        evaluate_onnx(cfg, args.model, args.threads, not args.no_progress, args.backend)
        return 0
    try:
        evaluate(cfg, args.ckpt, progress=not args.no_progress)
    finally:
        comm.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
