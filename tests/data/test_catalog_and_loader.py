"""The paths catalog (missing data, EXTRA, shapes generation) and make_data_loader end to end."""

import logging
import os

import pytest
import torch

from detection.config import ConfigError, validate_config
from detection.config import cfg as default_cfg
from detection.config.paths_catalog import DatasetCatalog
from detection.data import make_data_loader
from detection.data.batch_scale import BatchScaleSchedule
from detection.structures.bounding_box import BoxList
from detection.structures.image_list import ImageList
from detection.structures.segmentation_mask import SegmentationMask


def _cfg(root):
    cfg = default_cfg.clone()
    cfg.DATASETS.ROOT = str(root)
    cfg.DATASETS.SHAPES.NUM_TRAIN = 12
    cfg.DATASETS.SHAPES.NUM_VAL = 5
    cfg.DATASETS.SHAPES.MIN_SIZE = 48
    cfg.DATASETS.SHAPES.MAX_SIZE = 80
    cfg.DATASETS.TRAIN = ("shapes_train",)
    cfg.DATASETS.TEST = ("shapes_val",)
    cfg.INPUT.MIN_SIZE_TRAIN = (64, 72)
    cfg.INPUT.MAX_SIZE_TRAIN = 128
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.SIZE_DIVISIBILITY = 32
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.MAX_ITER = 7
    cfg.TEST.IMS_PER_BATCH = 2
    return cfg


def test_shapes_test_generated_when_first_named(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    cfg.DATASETS.SHAPES.NUM_TEST = 3
    make_data_loader(cfg, is_train=False)
    assert not os.path.exists(tmp_path / "shapes" / "test")  # only when a config names it
    cfg.DATASETS.TEST = ("shapes_test", "shapes_val")
    with caplog.at_level(logging.INFO):
        loaders = make_data_loader(cfg, is_train=False)
    assert "generating the shapes test split" in caplog.text
    assert [len(loader.dataset) for loader in loaders] == [3, 5]
    assert sorted(os.listdir(tmp_path)) == ["shapes"]  # no temporary folder left
    caplog.clear()
    with caplog.at_level(logging.INFO):
        make_data_loader(cfg, is_train=False)
    assert "generating" not in caplog.text  # generated once


def test_shapes_test_on_an_empty_root(tmp_path):
    """Naming only shapes_test still writes the whole set (train and val are not skipped later)."""
    cfg = _cfg(tmp_path)
    cfg.DATASETS.SHAPES.NUM_TEST = 2
    cfg.DATASETS.TEST = ("shapes_test",)
    assert len(make_data_loader(cfg, is_train=False)[0].dataset) == 2
    assert len(make_data_loader(cfg, is_train=True).dataset) == 12


def test_missing_coco_message(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get("coco_2017_val", cfg)
    msg = str(err.value)
    assert "coco/val2017" in msg and "instances_val2017.json" in msg
    assert f"ln -s /path/to/coco {os.path.join(str(tmp_path), 'coco')}" in msg
    with pytest.raises(KeyError, match="DATASETS.EXTRA"):
        DatasetCatalog.get("no_such_set", cfg)


def test_extra_datasets(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.DATASETS.EXTRA = (("mine", "mine/ann.json", "mine/img"),)
    with pytest.raises(FileNotFoundError, match="DATASETS.EXTRA"):
        DatasetCatalog.get("mine", cfg)
    (tmp_path / "mine/img").mkdir(parents=True)
    (tmp_path / "mine/ann.json").write_text("{}")
    got = DatasetCatalog.get("mine", cfg)
    assert got == {
        "factory": "COCODataset",
        "args": {
            "root": os.path.join(str(tmp_path), "mine/img"),
            "ann_file": os.path.join(str(tmp_path), "mine/ann.json"),
        },
    }
    cfg.DATASETS.EXTRA = (("bad", "x.json"),)
    with pytest.raises(ValueError, match="DATASETS.EXTRA"):
        DatasetCatalog.get("mine", cfg)


def test_make_data_loader_on_generated_shapes(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    with caplog.at_level(logging.INFO):
        loader = make_data_loader(cfg, is_train=True)
    assert "generating the shapes dataset" in caplog.text  # ROOT/shapes was missing
    assert os.path.isfile(tmp_path / "shapes/annotations/instances_train.json")
    assert len(loader) == 7
    seen = []
    for images, targets, indices in loader:
        assert isinstance(images, ImageList) and len(targets) == len(indices) <= 4
        assert images.tensors.shape[2] % 32 == 0 and images.tensors.shape[3] % 32 == 0
        for (h, w), t in zip(images.image_sizes, targets):
            assert isinstance(t, BoxList) and t.size == (w, h) and min(h, w) in (64, 72)
            labels = t.get_field("labels")
            assert labels.dtype == torch.int64 and len(labels) >= 1
            assert ((labels >= 1) & (labels <= 3)).all()
            assert isinstance(t.get_field("masks"), SegmentationMask)
            assert len(t.get_field("masks")) == len(t)
        seen.append(indices)
    assert len(seen) == 7
    resumed = [idx for _, _, idx in make_data_loader(cfg, is_train=True, start_iter=4)]
    assert resumed == seen[4:]  # exactly the remaining batches of the uninterrupted run
    tests = make_data_loader(cfg, is_train=False)
    assert isinstance(tests, list) and len(tests) == 1
    order = [i for _, _, idx in tests[0] for i in idx]
    assert order == list(range(5))  # every validation image once, in order
    cfg.SOLVER.IMS_PER_BATCH = 3  # the batch rule is the config loader's, checked once there
    with pytest.raises(
        ConfigError, match=r"SOLVER.IMS_PER_BATCH \(3\) must be a positive multiple"
    ):
        validate_config(cfg, world_size=2)


def test_batch_scales_rescale_whole_batches_and_resume(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.BATCH_SCALES_TRAIN = (0.5, 1.0)
    loader = make_data_loader(cfg, is_train=True)
    assert len(loader) == 7 and loader.dataset is not None  # the DataLoader's attributes
    schedule = BatchScaleSchedule.from_config(cfg)
    runs = []
    for it, (images, targets, indices) in enumerate(loader):
        short = {min(h, w) for h, w in images.image_sizes}
        assert short == {round(64 * schedule.scale(it))}, (it, short)
        assert images.tensors.shape[2] % 32 == 0 and images.tensors.shape[3] % 32 == 0
        assert all(t.size == (w, h) for (h, w), t in zip(images.image_sizes, targets))
        runs.append((indices, images.image_sizes))
    assert {schedule.scale(it) for it in range(7)} == {0.5, 1.0}
    resumed = make_data_loader(cfg, is_train=True, start_iter=4)
    assert [(idx, im.image_sizes) for im, _, idx in resumed] == runs[4:]
    cfg.INPUT.BATCH_SCALES_UNTIL = 0.5  # iterations 0-3 (< 3.5) rescaled, 4-6 at Resize's size
    sizes = [im.image_sizes for im, _, _ in make_data_loader(cfg, is_train=True)]
    assert all(min(min(hw) for hw in s) == 64 for s in sizes[4:])


def test_make_data_loader_with_workers(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.DATALOADER.NUM_WORKERS = 1
    cfg.SOLVER.MAX_ITER = 2
    cfg.DATASETS.TRAIN = ()
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        make_data_loader(cfg, is_train=True)
    cfg.DATASETS.TRAIN = ("shapes_train",)
    batches = list(make_data_loader(cfg, is_train=True))
    assert len(batches) == 2 and all(b[0].tensors.shape[1] == 3 for b in batches)
