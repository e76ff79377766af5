"""detection.utils helpers and the tools' start-up helpers (single process)."""

import logging

import pytest
import torch

from detection.engine.setup import load_config, select_device
from detection.utils import comm
from detection.utils.logger import setup_logger
from detection.utils.metric_logger import MetricLogger, SmoothedValue


def test_smoothed_value_window_and_global():
    v = SmoothedValue(window_size=3)
    for x in (10.0, 1.0, 2.0, 3.0):
        v.update(x)
    assert v.median == 2.0  # last three: 1, 2, 3
    assert v.avg == pytest.approx(2.0)
    assert v.global_avg == pytest.approx(4.0)
    assert v.latest == 3.0
    with pytest.raises(ValueError, match="window_size"):
        SmoothedValue(0)


def test_metric_logger_formats_median_and_global_average():
    m = MetricLogger(window_size=2)
    m.update(loss=torch.tensor(4.0), lr=0.1)
    m.update(loss=2.0, lr=0.1)
    m.update(loss=1.0, lr=0.1)
    assert m.loss.median == 1.0  # torch median of (2, 1) is the lower middle value
    assert str(m).startswith("loss: 1.0000 (2.3333)")
    with pytest.raises(TypeError, match="loss"):
        m.update(loss="x")
    with pytest.raises(AttributeError):
        _ = m.missing


def test_comm_single_process():
    assert comm.get_world_size() == 1 and comm.get_rank() == 0 and comm.is_main_process()
    d = {"a": torch.tensor(1.5)}
    assert comm.reduce_dict(d) is d
    assert comm.all_gather({"x": 1}) == [{"x": 1}]
    assert comm.gather_to_main(3) == [3]
    comm.synchronize()


def test_select_device(caplog):
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with caplog.at_level(logging.INFO):
            assert select_device("cuda", logging.getLogger("test.select_device")) == torch.device(
                "cpu"
            )
        assert "CUDA is not available" in caplog.text
    for bad in ("tpu", "mps"):
        with pytest.raises(ValueError, match="MODEL.DEVICE"):
            select_device(bad)


def test_load_config_overrides_and_errors(tmp_path):
    cfg = load_config(None, ["SOLVER.MAX_ITER", "7", "WORKSPACE", str(tmp_path)])
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.is_frozen()
    with pytest.raises(ValueError, match="KEY VALUE"):
        load_config(None, ["SOLVER.MAX_ITER"])
    with pytest.raises(FileNotFoundError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))  # the loader's check (a ConfigError too)
    with pytest.raises(ValueError, match="SOLVER.MAX_ITR"):
        load_config(None, ["SOLVER.MAX_ITR", "7"])


def test_logger_writes_file_on_rank0_only(tmp_path):
    log = setup_logger("test.logger", save_dir=str(tmp_path / "a"))
    log.info("hello")
    assert "hello" in (tmp_path / "a" / "log.txt").read_text()
    log = setup_logger("test.logger", save_dir=str(tmp_path / "b"), distributed_rank=1)
    log.info("quiet")
    assert not (tmp_path / "b").exists()
