"""`make_data_loader`: datasets from the catalog, transforms, samplers and collation from cfg."""

from __future__ import annotations

import logging
import random
from typing import List, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader

from detection.config.paths_catalog import DatasetCatalog
from detection.data.collate import BatchCollator
from detection.data.datasets.coco import COCODataset
from detection.data.datasets.voc import PascalVOCDataset
from detection.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
)
from detection.data.transforms import build_transforms

logger = logging.getLogger(__name__)

_FACTORIES = {"COCODataset": COCODataset, "PascalVOCDataset": PascalVOCDataset}


def build_dataset(cfg, names: Sequence[str], transforms, is_train: bool) -> List[COCODataset]:
    """One dataset per catalog name (images without annotations dropped only for training)."""
    key = "DATASETS.TRAIN" if is_train else "DATASETS.TEST"
    if isinstance(names, str) or len(names) == 0:
        raise ValueError(f"{key} must be a non-empty list of dataset names, got {names!r}")
    out = []
    for name in names:
        entry = DatasetCatalog.get(name, cfg)
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
) -> Union[DataLoader, List[DataLoader]]:
    """Training: one DataLoader of SOLVER.MAX_ITER batches of SOLVER.IMS_PER_BATCH // world size
    images (iterations `start_iter`..MAX_ITER-1 of the same sequence an uninterrupted run sees).
    Inference: a list with one DataLoader per DATASETS.TEST name, TEST.IMS_PER_BATCH // world
    size images per batch, in order, sharded across ranks. Batches are
    `(ImageList, tuple[BoxList], tuple[int])`.
    """
    world, rank = _world() if is_distributed else (1, 0)
    key = "SOLVER.IMS_PER_BATCH" if is_train else "TEST.IMS_PER_BATCH"
    total = cfg.SOLVER.IMS_PER_BATCH if is_train else cfg.TEST.IMS_PER_BATCH
    if total <= 0 or total % world:
        raise ValueError(
            f"{key} ({total}) must be a positive multiple of the number of processes ({world})"
        )
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
        return _loader(cfg, dataset, batches, cfg.SEED + rank + start_iter)
    loaders = []
    for d in datasets:
        sampler = DistributedSampler(d, world, rank, shuffle=False, seed=cfg.SEED)
        batches = torch.utils.data.BatchSampler(sampler, per_rank, drop_last=False)
        loaders.append(_loader(cfg, d, batches, cfg.SEED + rank))
    return loaders
