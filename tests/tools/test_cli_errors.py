"""One `error:` line and exit status 2, never a traceback, for each mistake issue #15 lists:
a `--ckpt` that is the last_checkpoint pointer (followed), a folder (resolved), missing, corrupt
or of another kind; an empty `--input` folder; a missing `--config`; an odd number of overrides;
a dataset that is not linked; a corrupt annotation JSON; bad arguments of every tool; and a
fresh run in a WORKSPACE holding another run's checkpoints.

The tools run in-process through `main(argv)`; two cases run as real processes to check that
nothing but the error line reaches stderr.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from detection.engine.checkpoint_paths import read_checkpoint, resolve_checkpoint
from detection.engine.run_guard import earlier_run_files, guard_fresh_run
from detection.utils.cli import MissingInputError, UsageError


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_HERE = os.path.dirname(os.path.abspath(__file__))
tools_helpers = _load("cli_errors_tools_helpers", os.path.join(_HERE, "test_tools.py"))
ROOT = tools_helpers.ROOT
CONFIG = tools_helpers.CONFIG
_load_tool = tools_helpers._load_tool


def _one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture()
def ckpt_tree(tmp_path):
    """WORKSPACE/model/{model_0000002.pth, last_checkpoint}, WORKSPACE/final/model_final.pth."""
    ws = tmp_path / "ws"
    (ws / "model").mkdir(parents=True)
    (ws / "final").mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "iteration": 2}, ws / "model" / "model_0000002.pth")
    (ws / "model" / "last_checkpoint").write_text("model_0000002.pth\n")
    torch.save({"model": {"w": torch.ones(1)}}, ws / "final" / "model_final.pth")
    return ws


# ------------------------------------------------------------------- checkpoint resolution
def test_pointer_file_is_followed(ckpt_tree):
    pointer = ckpt_tree / "model" / "last_checkpoint"
    assert resolve_checkpoint(str(pointer)) == str(ckpt_tree / "model" / "model_0000002.pth")


def test_folders_resolve_to_their_checkpoint(ckpt_tree):
    model_dir = ckpt_tree / "model"
    assert resolve_checkpoint(str(model_dir)) == str(model_dir / "model_0000002.pth")
    # a WORKSPACE: the final model first
    assert resolve_checkpoint(str(ckpt_tree)) == str(ckpt_tree / "final" / "model_final.pth")
    os.remove(ckpt_tree / "final" / "model_final.pth")
    assert resolve_checkpoint(str(ckpt_tree)) == str(model_dir / "model_0000002.pth")


def test_checkpoint_path_errors_name_flag_and_file(tmp_path, ckpt_tree):
    with pytest.raises(MissingInputError, match=r"--ckpt: no such file or folder .*nope\.pth"):
        resolve_checkpoint(str(tmp_path / "nope.pth"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"--ckpt: no checkpoint in folder .*empty"):
        resolve_checkpoint(str(tmp_path / "empty"))
    os.remove(ckpt_tree / "model" / "model_0000002.pth")
    with pytest.raises(UsageError, match=r"points to .*model_0000002\.pth, which does not exist"):
        resolve_checkpoint(str(ckpt_tree / "model" / "last_checkpoint"), "MODEL.WEIGHT")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04" + os.urandom(5000))
    with pytest.raises(UsageError, match=r"--ckpt: .*corrupt\.pth is not a readable checkpoint"):
        read_checkpoint(str(resolve_checkpoint(str(corrupt))))


# --------------------------------------------------------------------------- never lose a run
def test_fresh_run_refuses_a_workspace_with_checkpoints(ckpt_tree):
    with pytest.raises(UsageError, match=r"--resume.*another\s+WORKSPACE.*--overwrite"):
        guard_fresh_run(str(ckpt_tree), overwrite=False)
    assert len(earlier_run_files(str(ckpt_tree))) == 3, "nothing removed without --overwrite"
    guard_fresh_run(str(ckpt_tree), overwrite=True, is_main=False)
    assert len(earlier_run_files(str(ckpt_tree))) == 3, "only the main process removes"
    guard_fresh_run(str(ckpt_tree), overwrite=True)
    assert earlier_run_files(str(ckpt_tree)) == []
    guard_fresh_run(str(ckpt_tree), overwrite=False)  # now empty: accepted


def test_train_without_resume_keeps_the_earlier_run(ckpt_tree, capsys):
    before = {p: os.path.getmtime(p) for p in earlier_run_files(str(ckpt_tree))}
    status = _load_tool("train").main(["--config", CONFIG, "WORKSPACE", str(ckpt_tree)])
    assert status == 2
    _one_error_line(capsys.readouterr().err, str(ckpt_tree), "--resume", "--overwrite")
    assert {p: os.path.getmtime(p) for p in earlier_run_files(str(ckpt_tree))} == before
    assert (ckpt_tree / "model" / "last_checkpoint").read_text() == "model_0000002.pth\n"


def test_train_refuses_resume_with_overwrite(ckpt_tree, capsys):
    """The two ask for opposite things; neither wins silently, and nothing is deleted."""
    before = {p: os.path.getmtime(p) for p in earlier_run_files(str(ckpt_tree))}
    status = _load_tool("train").main(
        ["--config", CONFIG, "--resume", "--overwrite", "WORKSPACE", str(ckpt_tree)]
    )
    assert status == 2
    _one_error_line(capsys.readouterr().err, "--resume", "--overwrite")
    assert {p: os.path.getmtime(p) for p in earlier_run_files(str(ckpt_tree))} == before


def test_train_with_a_missing_or_stale_build_stops_before_touching_the_workspace(
    tmp_path, monkeypatch, capsys
):
    from detection import _ext

    monkeypatch.setattr(_ext, "HAS_OPS", False)
    monkeypatch.setattr(_ext, "_LOAD_ERROR", ": _C.so was built from older sources (...)")
    workspace = tmp_path / "ws"
    assert _load_tool("train").main(["--config", CONFIG, "WORKSPACE", str(workspace)]) == 2
    _one_error_line(capsys.readouterr().err, "compiled ops", "older sources", "pip install")
    assert not workspace.exists()


# ------------------------------------------------------------------------ arguments, config
@pytest.mark.parametrize("tool", ["train", "test"])
def test_missing_config_file(tool, tmp_path, capsys):
    assert _load_tool(tool).main(["--config", str(tmp_path / "nope.yaml")]) == 2
    _one_error_line(capsys.readouterr().err, "--config", "nope.yaml")


@pytest.mark.parametrize("tool", ["train", "test"])
def test_odd_number_of_overrides(tool, capsys):
    assert _load_tool(tool).main(["--config", CONFIG, "SOLVER.MAX_ITER"]) == 2
    _one_error_line(capsys.readouterr().err, "KEY VALUE", "SOLVER.MAX_ITER")


@pytest.mark.parametrize(
    "tool, argv, needle",
    [
        ("train", ["--no-such-flag"], "--config"),
        ("test", ["--config"], "--config"),
        ("infer", ["--config", "x.yaml"], "--ckpt"),
        ("demo", ["--threads", "many"], "--threads"),
        ("demo", ["--procs", "0"], "--procs"),
        ("demo", ["--procs", "3"], "SOLVER.IMS_PER_BATCH"),
        ("make_shapes", ["--num-train", "-1"], "--num-train"),
        ("plot_curves", ["--metrics"], "--metrics"),
        ("plot_scaled_mnist", [], "RUN_DIR"),
        ("visualize_dcn", ["--out", "x"], "--run"),
    ],
)
def test_bad_arguments_give_one_error_line(tool, argv, needle, capsys):
    from detection.utils.cli import run_tool

    assert run_tool(_load_tool(tool).main, argv) == 2
    _one_error_line(capsys.readouterr().err, needle)


def test_plot_curves_missing_and_corrupt_metrics(tmp_path, capsys):
    plot = _load_tool("plot_curves")
    assert plot.main(["--metrics", str(tmp_path / "none.jsonl")]) == 2
    _one_error_line(capsys.readouterr().err, "--metrics", "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"iter": 1, "loss": 1.0}\n{"iter": 2, "lo')
    assert plot.main(["--metrics", str(bad)]) == 2
    _one_error_line(capsys.readouterr().err, "bad.jsonl:2")


# ------------------------------------------------------------------- files behind the flags
OPS = pytest.mark.skipif(not tools_helpers.OPS_READY, reason="needs the compiled detection ops")


@OPS
def test_infer_empty_input_folder(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    argv = ["--config", CONFIG, "--ckpt", str(tmp_path), "--input", str(tmp_path / "in")]
    assert (
        _load_tool("infer").main(argv + ["--output", str(tmp_path / "out"), "MODEL.DEVICE", "cpu"])
        == 2
    )
    _one_error_line(capsys.readouterr().err, "--input", "has no")


@OPS
@pytest.mark.parametrize("case", ["missing", "folder", "corrupt", "other_kind"])
def test_test_tool_bad_ckpt(case, tmp_path, capsys):
    if case == "missing":
        ckpt, needle = tmp_path / "gone.pth", "no such file or folder"
    elif case == "folder":
        ckpt, needle = tmp_path, "no checkpoint in folder"
    elif case == "corrupt":
        ckpt, needle = tmp_path / "model_final.pth", "not a readable checkpoint"
        ckpt.write_bytes(b"\x80\x02garbage" * 100)
    else:  # a scaled-MNIST-like classifier: no key in common with the detector
        ckpt, needle = tmp_path / "classifier.pth", "not a checkpoint of this detector"
        torch.save({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, ckpt)
    argv = ["--config", CONFIG, "--ckpt", str(ckpt), "--no-progress", "MODEL.DEVICE", "cpu"]
    argv += ["WORKSPACE", str(tmp_path / "ws"), "DATASETS.ROOT", str(tmp_path / "data")]
    argv += ["DATASETS.SHAPES.NUM_TRAIN", "2", "DATASETS.SHAPES.NUM_VAL", "2"]
    assert _load_tool("test").main(argv) == 2
    _one_error_line(capsys.readouterr().err, needle, str(ckpt))


@OPS
def test_unlinked_coco_is_one_line_without_config_dump(tmp_path):
    """A real process: stderr holds the error line only, and the config is not dumped first."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config", CONFIG]
    cmd += ["MODEL.DEVICE", "cpu", "WORKSPACE", str(tmp_path / "ws")]
    cmd += ["DATASETS.ROOT", str(tmp_path / "datasets"), "DATASETS.TRAIN", "('coco_2017_train',)"]
    cmd += ["DATASETS.TEST", "('coco_2017_val',)"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    _one_error_line(res.stderr, "coco_2017_train", "ln -s")
    assert "Running with config" not in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


@OPS
def test_corrupt_annotation_json_names_the_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    ann = tmp_path / "instances.json"
    ann.write_text('{"images": [{"id": 1, "width": 8, ')
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config", CONFIG]
    cmd += [
        "MODEL.DEVICE",
        "cpu",
        "WORKSPACE",
        str(tmp_path / "ws"),
        "DATASETS.ROOT",
        str(tmp_path),
    ]
    cmd += [
        "DATASETS.EXTRA",
        "(('mine', 'instances.json', 'imgs'),)",
        "DATASETS.TRAIN",
        "('mine',)",
    ]
    cmd += ["DATASETS.TEST", "()", "SOLVER.TEST_PERIOD", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    _one_error_line(res.stderr, str(ann), "not valid JSON")
    assert "Traceback" not in res.stdout + res.stderr


def test_corrupt_annotation_json_in_process(tmp_path):
    from detection.data.datasets.coco import load_coco_json

    ann = tmp_path / "a.json"
    ann.write_text("{ not json")
    with pytest.raises(UsageError, match=r"corrupt annotation file .*a\.json"):
        load_coco_json(str(ann))
    ann.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"id": 1}]}))
    with pytest.raises(UsageError, match=r"a\.json is not in COCO format"):
        load_coco_json(str(ann))


def test_visualize_dcn_corrupt_model(tmp_path, capsys):
    from detection.utils.cli import run_tool

    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x02 not a pickle")
    assert (
        run_tool(_load_tool("visualize_dcn").main, ["--ckpt", str(bad), "--out", str(tmp_path)])
        == 2
    )
    _one_error_line(capsys.readouterr().err, "--ckpt", str(bad), "not a model.pt")
    assert (
        run_tool(_load_tool("visualize_dcn").main, ["--run", str(tmp_path / "no"), "--out", "x"])
        == 2
    )
    _one_error_line(capsys.readouterr().err, "does not exist")
