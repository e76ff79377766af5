"""`make_data_loader`: datasets from the catalog, transforms, samplers and collation from cfg."""

from __future__ import annotations

import logging
import os
import random
import shutil
from typing import List, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader

from detection.config.paths_catalog import DatasetCatalog
from detection.data.batch_scale import BatchScaledLoader, BatchScaleSchedule
from detection.data.collate import BatchCollator
from detection.data.datasets.coco import COCODataset
from detection.data.datasets.mnist_det import ensure_mnist_det
from detection.data.datasets.shapes import generate_shapes_dataset, generate_split
from detection.data.datasets.voc import PascalVOCDataset
from detection.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
)
from detection.data.transforms import build_transforms

logger = logging.getLogger(__name__)

_FACTORIES = {"COCODataset": COCODataset, "PascalVOCDataset": PascalVOCDataset}


def ensure_shapes_dataset(cfg) -> None:
    """Write DATASETS.ROOT/shapes from DATASETS.SHAPES.* when it is missing (into a temporary
    folder, then renamed, so concurrent ranks never see a half-written set)."""
    s = cfg.DATASETS.SHAPES
    final = os.path.join(cfg.DATASETS.ROOT, "shapes")
    if os.path.isdir(final):
        return
    tmp = f"{final}.tmp{os.getpid()}"
    logger.info(
        "%s is missing: generating the shapes dataset "
        "(%d train / %d val images, sides %d-%d, seed %d)",
        final,
        s.NUM_TRAIN,
        s.NUM_VAL,
        s.MIN_SIZE,
        s.MAX_SIZE,
        s.SEED,
    )
    generate_shapes_dataset(tmp, s.NUM_TRAIN, s.NUM_VAL, s.SEED, s.MIN_SIZE, s.MAX_SIZE)
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished first: its copy is identical (same seed)
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_shapes_test(cfg) -> None:
    """Write the held-out split ROOT/shapes/test (DATASETS.SHAPES.NUM_TEST images) beside an
    existing shapes set when it is missing: generated into a temporary folder, then the images'
    folder and the JSON renamed into place, the JSON last."""
    ensure_shapes_dataset(cfg)
    s = cfg.DATASETS.SHAPES
    final = os.path.join(cfg.DATASETS.ROOT, "shapes")
    ann = os.path.join(final, "annotations", "instances_test.json")
    if os.path.isfile(ann):
        return
    logger.info(
        "%s is missing: generating the shapes test split (%d images, seed %d)",
        ann,
        s.NUM_TEST,
        s.SEED,
    )
    tmp = f"{final}.test.tmp{os.getpid()}"
    generate_split(tmp, "test", s.NUM_TEST, s.SEED, s.MIN_SIZE, s.MAX_SIZE)
    try:
        os.rename(os.path.join(tmp, "test"), os.path.join(final, "test"))
    except OSError:  # another process moved its copy first: identical files (same seed)
        pass
    os.replace(os.path.join(tmp, "annotations", "instances_test.json"), ann)
    shutil.rmtree(tmp, ignore_errors=True)


def resolve_dataset(name: str, cfg) -> dict:
    """`DatasetCatalog.get(name, cfg)`, generating a missing generated set first: the shapes set
    for a shapes name, the digit-detection set (from the MNIST digits) for an mnist_det name."""
    if name == "shapes_test":
        ensure_shapes_test(cfg)  # the set first, then its test split
    elif name.startswith("shapes_"):
        ensure_shapes_dataset(cfg)
    if name.startswith("mnist_det_"):
        ensure_mnist_det(cfg.DATASETS.ROOT)
    return DatasetCatalog.get(name, cfg)


def build_dataset(cfg, names: Sequence[str], transforms, is_train: bool) -> List[COCODataset]:
    """One dataset per catalog name (images without annotations dropped only for training)."""
    key = "DATASETS.TRAIN" if is_train else "DATASETS.TEST"
    if isinstance(names, str) or len(names) == 0:
        raise ValueError(f"{key} must be a non-empty list of dataset names, got {names!r}")
    out = []
    for name in names:
        entry = resolve_dataset(name, cfg)
        factory = _FACTORIES[entry["factory"]]
        out.append(
            factory(
                remove_images_without_annotations=is_train,
                transforms=transforms,
                skip_bad_images=cfg.DATASETS.SKIP_BAD_IMAGES,
                **entry["args"],
            )
        )
    return out


def _aspect_groups(dataset) -> List[int]:
    """1 where an image is taller than wide, else 0 (from the JSON sizes)."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    groups = []
    for d in parts:
        for i in range(len(d)):
            info = d.get_img_info(i)
            groups.append(int(info["height"] > info["width"]))
    return groups


def _world() -> tuple:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # set per worker by the DataLoader from its generator
    random.seed(seed)
    np.random.seed(seed)


def _loader(cfg, dataset, batch_sampler, seed: int) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY),
        worker_init_fn=_seed_worker,
        generator=g,
    )


def make_data_loader(
    cfg, is_train: bool = True, is_distributed: bool = False, start_iter: int = 0
) -> Union[DataLoader, BatchScaledLoader, List[DataLoader]]:
    """Training: one DataLoader of SOLVER.MAX_ITER batches of SOLVER.IMS_PER_BATCH // world size
    images (iterations `start_iter`..MAX_ITER-1 of the same sequence an uninterrupted run sees),
    wrapped in a `BatchScaledLoader` when INPUT.BATCH_SCALES_TRAIN rescales its batches.
    Inference: a list with one DataLoader per DATASETS.TEST name, TEST.IMS_PER_BATCH // world
    size images per batch, in order, sharded across ranks. Batches are
    `(ImageList, tuple[BoxList], tuple[int])`.
    """
    world, rank = _world() if is_distributed else (1, 0)
    # a positive multiple of the world size: checked once, by the config loader
    total = cfg.SOLVER.IMS_PER_BATCH if is_train else cfg.TEST.IMS_PER_BATCH
    per_rank = total // world
    if cfg.DATALOADER.NUM_WORKERS < 0:
        raise ValueError(f"DATALOADER.NUM_WORKERS must be >= 0, got {cfg.DATALOADER.NUM_WORKERS}")
    transforms = build_transforms(cfg, is_train)
    names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    datasets = build_dataset(cfg, names, transforms, is_train)
    if is_train:
        dataset = datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)
        if len(dataset) == 0:
            raise ValueError(f"DATASETS.TRAIN {tuple(names)} has no image with annotations")
        if start_iter < 0 or start_iter > cfg.SOLVER.MAX_ITER:
            raise ValueError(
                f"start_iter {start_iter} outside [0, SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}]"
            )
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.SEED)
        if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
            batches = GroupedBatchSampler(
                sampler, _aspect_groups(dataset), per_rank, drop_uneven=False
            )
        else:
            batches = torch.utils.data.BatchSampler(sampler, per_rank, drop_last=False)
        batches = IterationBasedBatchSampler(batches, cfg.SOLVER.MAX_ITER, start_iter)
        # workers' random transforms differ after a resume; the batches (indices) do not
        loader = _loader(cfg, dataset, batches, cfg.SEED + rank + start_iter)
        schedule = BatchScaleSchedule.from_config(cfg)
        if schedule is None:
            return loader
        return BatchScaledLoader(loader, schedule, start_iter, cfg.DATALOADER.SIZE_DIVISIBILITY)
    loaders = []
    for d in datasets:
        sampler = DistributedSampler(d, world, rank, shuffle=False, seed=cfg.SEED)
        batches = torch.utils.data.BatchSampler(sampler, per_rank, drop_last=False)
        loaders.append(_loader(cfg, d, batches, cfg.SEED + rank))
    return loaders
