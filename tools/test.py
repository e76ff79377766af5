#!/usr/bin/env python
"""Evaluate a trained detector on DATASETS.TEST (COCO bbox and segm AP).

    python tools/test.py --config FILE [--ckpt PATH] [KEY VALUE ...]
    torchrun --nproc_per_node=N tools/test.py --config FILE --ckpt PATH

Writes bbox.json, segm.json (COCO results) and metrics.json under WORKSPACE/inference/<dataset>/.
--ckpt defaults to WORKSPACE/final/model_final.pth, else the last checkpoint in WORKSPACE/model;
it may name a checkpoint, a last_checkpoint pointer, a folder of checkpoints or a WORKSPACE.
Exit status 2 with one `error:` line for bad arguments, a missing or unreadable file or a
checkpoint of another kind.
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
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config"
    )
    return parser.parse_args(argv)


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


@cli.cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts, exit_on_error=True)
    try:
        evaluate(cfg, args.ckpt, progress=not args.no_progress)
    finally:
        if comm.is_dist_avail_and_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
