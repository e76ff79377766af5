"""Start-up shared by tools/train.py, test.py, infer.py and demo.py: config loading, device
selection, process group, logging and seeding, the training model under DDP, and evaluation over
DATASETS.TEST."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Sequence

import torch
from torch import nn

from detection.config import ConfigFileNotFoundError, load_checked_config
from detection.config import load_config as _load_config
from detection.data import make_data_loader
from detection.engine.amp import resolve_amp_dtype
from detection.engine.checkpoint_paths import read_checkpoint, resolve_checkpoint
from detection.engine.checkpointer import Checkpointer, unwrap_model
from detection.engine.inference import inference
from detection.modeling import check_model_config
from detection.modeling.backbone import load_torchvision_resnet
from detection.utils import comm
from detection.utils.collect_env import collect_env_info
from detection.utils.logger import setup_logger
from detection.utils.seed import seed_all


def load_config(config_file: str | None, opts: Sequence[str] = (), exit_on_error: bool = False):
    """Defaults, then `config_file` (YAML), then trailing `KEY VALUE` pairs; returns a frozen,
    checked cfg (`detection.config.load_config`; a missing file or an odd number of overrides
    is a ConfigError there). With `exit_on_error` (command-line tools) the model builders' checks
    run too (`check_model_config`), and a missing file is named as the `--config` flag's: the
    tool's `detection.utils.cli.cli_main` turns the ConfigError (a UsageError) into one
    `error: ...` line and exit status 2."""
    if not exit_on_error:
        return _load_config(config_file, list(opts))
    try:
        return load_checked_config(config_file, list(opts), check=check_model_config)
    except ConfigFileNotFoundError as e:
        raise ConfigFileNotFoundError(
            f"--config: {e}: give a YAML file such as those in configs/"
        ) from None


def select_device(requested: str, logger: logging.Logger | None = None) -> torch.device:
    """MODEL.DEVICE as a torch.device; "cuda" falls back to CPU (with a log line) without a GPU.

    Under torchrun each process takes GPU `LOCAL_RANK`.
    """
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cuda", "cpu"):
        raise ValueError(f"MODEL.DEVICE must be 'cuda' or 'cpu', got {requested!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        if logger is not None:
            logger.info("MODEL.DEVICE is %r but CUDA is not available: running on CPU", requested)
        return torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", comm.get_local_rank())
    return device


def setup_runtime(
    cfg, name: str, log_dir: str | None = None
) -> tuple[torch.device, bool, logging.Logger]:
    """Device, process group (under torchrun), logger (rank 0 also to `log_dir/log.txt`), seed.

    Returns (device, distributed, logger). Each rank is seeded with `cfg.SEED + rank`.
    """
    logger = setup_logger("detection", save_dir="", distributed_rank=0)
    device = select_device(
        cfg.MODEL.DEVICE, logger if int(os.environ.get("RANK", "0")) == 0 else None
    )
    distributed = comm.init_distributed(device)
    rank = comm.get_rank()
    logger = setup_logger("detection", save_dir=log_dir or "", distributed_rank=rank)
    logger.info("%s: %d process(es), device %s", name, comm.get_world_size(), device)
    if rank == 0:
        logger.info("Environment:\n%s", collect_env_info())
    seed_all(cfg.SEED + rank, deterministic=cfg.DETERMINISTIC)
    return device, distributed, logger


_RUNNING_STATS_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


def has_running_stats(model: nn.Module) -> bool:
    """Whether training changes a buffer of `model`: a norm layer that tracks running statistics."""
    return any(
        isinstance(m, _RUNNING_STATS_NORMS) and m.track_running_stats for m in model.modules()
    )


def distributed_model(
    model: nn.Module, device: torch.device, find_unused_parameters: bool = False
) -> nn.parallel.DistributedDataParallel:
    """`model` under DistributedDataParallel as tools/train.py trains it (one device per process).

    Rank 0's buffers are sent to the others at every forward only where training changes them
    (BatchNorm statistics): the shipped models' buffers (anchors, FrozenBN) never change, and the
    broadcast would be a collective at the start of each forward, where every rank waits for the
    slowest one's previous step. The gradients live in the all-reduce buckets
    (`gradient_as_bucket_view`): no copy into and out of them, and one gradient's memory less.
    torch 2.13 calls the forward's broadcast `forward_sync_buffers` and warns at every
    `broadcast_buffers`; older releases (the GPU machine's 2.11) know only `broadcast_buffers`.
    Start the group with `comm.init_process_group` and end it with `comm.destroy_process_group`,
    with this model no longer referenced: otherwise the group outlives the destroy, and the
    process can hang or abort at exit (RELIABILITY.md, "The end of a distributed run").
    """
    ddp = nn.parallel.DistributedDataParallel
    new_name = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    buffers_key = "forward_sync_buffers" if new_name else "broadcast_buffers"
    return ddp(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
        gradient_as_bucket_view=True,
        **{buffers_key: has_running_stats(model)},
    )


def build_test_loaders(cfg, distributed: bool) -> list[tuple[str, object]]:
    """(dataset name, loader) for each of DATASETS.TEST."""
    if not cfg.DATASETS.TEST:
        raise ValueError("DATASETS.TEST is empty: nothing to evaluate on")
    loaders = make_data_loader(cfg, is_train=False, is_distributed=distributed)
    if not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    if len(loaders) != len(cfg.DATASETS.TEST):
        raise RuntimeError(
            f"make_data_loader gave {len(loaders)} loaders for DATASETS.TEST={cfg.DATASETS.TEST}"
        )
    return list(zip(cfg.DATASETS.TEST, loaders))


def iou_types_for(cfg) -> tuple[str, ...]:
    """("bbox",) plus "segm" when MODEL.MASK_ON."""
    return ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)


def run_evaluation(
    cfg,
    model: nn.Module,
    device: torch.device,
    distributed: bool,
    logger: logging.Logger,
    progress: bool = True,
    output_root: str | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Inference + COCO evaluation on each of DATASETS.TEST; results under
    `output_root or WORKSPACE/inference`/<dataset>/. Returns {dataset: metrics} on rank 0, {}
    elsewhere."""
    output_root = output_root or os.path.join(cfg.WORKSPACE, "inference")
    amp_dtype = resolve_amp_dtype(cfg, device)
    results = {}
    for name, loader in build_test_loaders(cfg, distributed):
        metrics = inference(
            model,
            loader,
            dataset_name=name,
            device=device,
            iou_types=iou_types_for(cfg),
            output_folder=os.path.join(output_root, name),
            amp_dtype=amp_dtype,
            mask_threshold=cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD,
            progress=progress,
            logger=logger,
        )
        comm.synchronize()
        if metrics is not None:
            results[name] = metrics
    return results


def _is_torchvision_resnet(state_dict: dict) -> bool:
    return "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict)


def load_initial_weights(
    model: nn.Module, path: str, logger: logging.Logger, cfg_yaml: str = ""
) -> None:
    """MODEL.WEIGHT: a checkpoint or bare state dict of this architecture (loaded strictly; a
    mismatch raises CheckpointMismatchError naming the keys and, given the current config as
    `cfg_yaml`, the MODEL.* keys that differ from the checkpoint's), or a torchvision ResNet
    state dict (loaded into the backbone only). No optimizer state is taken."""
    path = resolve_checkpoint(path, "MODEL.WEIGHT")
    data = read_checkpoint(path, "MODEL.WEIGHT")
    if isinstance(data, dict) and _is_torchvision_resnet(data):
        missing, skipped = load_torchvision_resnet(unwrap_model(model).backbone, data)
        logger.info(
            "Loaded torchvision ResNet weights %s into the backbone (%d keys left at init: %s; %d unused)",
            path,
            len(missing),
            ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""),
            len(skipped),
        )
        return
    Checkpointer(model, logger=logger, cfg_yaml=cfg_yaml).load(path, resume=False)
