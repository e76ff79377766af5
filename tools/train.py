#!/usr/bin/env python
"""Train a detector.

    python tools/train.py --config FILE [--resume] [KEY VALUE ...]
    torchrun --nproc_per_node=N tools/train.py --config FILE [KEY VALUE ...]

Trailing KEY VALUE pairs override the config. Outputs under WORKSPACE: model/ (periodic
checkpoints, rotated, with a last_checkpoint pointer), save/ (milestone checkpoints), final/
(model_final.pth), log/ (log.txt, TensorBoard events, metrics.jsonl), inference/ (evaluations).

Exit status: 0 trained to SOLVER.MAX_ITER; 1 stopped at a non-finite loss or gradient
(SOLVER.SKIP_NONFINITE_STEPS); 2 bad arguments or config, a missing or unreadable file, weights
(MODEL.WEIGHT, or the checkpoint --resume found) of another architecture, or a fresh start
(no --resume) in a WORKSPACE holding another run's checkpoints (--overwrite deletes them);
143 / 130 stopped by SIGTERM / SIGINT after saving a checkpoint of the current iteration
(continue with --resume). A SIGKILL loses at most the
iterations since the last checkpoint (SOLVER.CHECKPOINT_PERIOD): --resume continues from it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree first

import detection  # noqa: E402, F401  (first: its OpenMP defaults must precede torch)

# isort: split

import torch

from detection import _ext
from detection.engine.checkpointer import (
    Checkpointer,
    CheckpointMismatchError,
    remove_stale_temp_files,
)
from detection.engine.run_guard import guard_fresh_run
from detection.engine.setup import (
    distributed_model,
    load_config,
    load_initial_weights,
    run_evaluation,
    setup_runtime,
)
from detection.engine.trainer import NonFiniteStepError, TrainingInterrupted, TrainOptions, do_train
from detection.solver import build_lr_scheduler, build_optimizer
from detection.utils import cli, comm


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--resume", action="store_true", help="continue from WORKSPACE/model/last_checkpoint"
    )
    start.add_argument(
        "--overwrite",
        action="store_true",
        help="start from iteration 0 even if WORKSPACE holds another run's checkpoints "
        "(they are deleted first); without it such a start is refused",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config"
    )
    return parser.parse_args(argv)


def _resume_state(checkpointer: Checkpointer, logger) -> tuple[int, dict | None]:
    path = checkpointer.get_checkpoint_file()
    if path is None:
        logger.info("--resume: no checkpoint in %s, starting from scratch", checkpointer.save_dir)
        return 0, None
    rest = checkpointer.load(path, resume=True)
    rng_all = rest.get("rng_all_ranks")
    if rng_all is not None and len(rng_all) == comm.get_world_size():
        rng = rng_all[comm.get_rank()]
    else:
        if rng_all is not None:
            logger.warning(
                "checkpoint was written by %d processes, now %d: RNG streams differ",
                len(rng_all),
                comm.get_world_size(),
            )
        rng = rest.get("rng")
    logger.info("Resuming from %s at iteration %d", path, rest["iteration"])
    return int(rest["iteration"]), rng


def train(cfg, resume: bool = False) -> torch.nn.Module:
    """Build everything from `cfg` and train; returns the (unwrapped) model."""
    from detection.data import make_data_loader
    from detection.modeling import build_detection_model

    device, distributed, logger = setup_runtime(
        cfg, "train", log_dir=os.path.join(cfg.WORKSPACE, "log")
    )
    if comm.is_main_process():
        for sub in ("model", "log", "final", "save"):
            os.makedirs(os.path.join(cfg.WORKSPACE, sub), exist_ok=True)
            for stale in remove_stale_temp_files(os.path.join(cfg.WORKSPACE, sub)):
                logger.info("Removed %s (a write interrupted by a kill)", stale)
    options = TrainOptions.from_config(cfg, device, logger)
    model = build_detection_model(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(
        model,
        optimizer,
        scheduler,
        save_dir=os.path.join(cfg.WORKSPACE, "model"),
        keep=cfg.SOLVER.CHECKPOINT_KEEP,
        save_to_disk=comm.is_main_process(),
        logger=logger,
        cfg_yaml=cfg.dump(),
    )
    start_iter, rng_state = _resume_state(checkpointer, logger) if resume else (0, None)
    if start_iter == 0 and cfg.MODEL.WEIGHT:
        load_initial_weights(model, cfg.MODEL.WEIGHT, logger, cfg_yaml=cfg.dump())
    if start_iter >= cfg.SOLVER.MAX_ITER:
        logger.info(
            "Checkpoint is at iteration %d >= SOLVER.MAX_ITER: nothing to train", start_iter
        )
        _ensure_final(cfg, model, start_iter, logger)
        return model

    train_model = model
    if distributed:
        train_model = distributed_model(model, device, cfg.DDP_FIND_UNUSED_PARAMETERS)
    data_loader = make_data_loader(
        cfg, is_train=True, is_distributed=distributed, start_iter=start_iter
    )
    if comm.is_main_process():  # after the data is found: a missing set gives one error line
        logger.info("Running with config:\n%s", cfg.dump())

    test_fn = None
    if cfg.SOLVER.TEST_PERIOD > 0 and cfg.DATASETS.TEST:

        def test_fn(_m, iteration):
            results = run_evaluation(cfg, model, device, distributed, logger, progress=False)
            return {
                f"{name}/{iou}": v
                for name, metrics in results.items()
                for iou, v in metrics.items()
            }

    do_train(
        train_model,
        data_loader,
        optimizer,
        scheduler,
        checkpointer,
        device,
        options,
        start_iter=start_iter,
        rng_state=rng_state,
        test_fn=test_fn,
        logger=logger,
    )
    if distributed:
        check_replicas_identical(model, logger)
    if comm.is_main_process():
        logger.info("Final model: %s", os.path.join(cfg.WORKSPACE, "final", "model_final.pth"))
    return model


def _ensure_final(cfg, model: torch.nn.Module, iteration: int, logger) -> None:
    """A kill between the last periodic checkpoint and final/model_final.pth leaves no final
    model: write it from the checkpoint just loaded."""
    final = os.path.join(cfg.WORKSPACE, "final")
    if comm.is_main_process() and not os.path.isfile(os.path.join(final, "model_final.pth")):
        Checkpointer(model, logger=logger).save(
            "model_final", folder=final, rotate=False, iteration=iteration, cfg=cfg.dump()
        )


def check_replicas_identical(model: torch.nn.Module, logger) -> None:
    """Compare a digest of every rank's weights; raise if DDP replicas diverged."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    digests = comm.all_gather(digest.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"model replicas differ across ranks after training: {digests}")
    logger.info("model replicas identical across %d ranks (sha1 %s)", len(digests), digests[0])


@cli.cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts, exit_on_error=True)
    _ext.require_ops()  # a missing or stale build: one error line now, not at the first step
    if not args.resume:
        guard_fresh_run(
            cfg.WORKSPACE, args.overwrite, is_main=int(os.environ.get("RANK", "0")) == 0
        )
    try:
        train(cfg, resume=args.resume)
    except TrainingInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except NonFiniteStepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except CheckpointMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        comm.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
