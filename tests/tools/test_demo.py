"""tools/demo.py --quick end to end (train, test, infer, plot as subprocesses), shortened further."""

import json
import os
import subprocess
import sys

import pytest

from detection import HAS_OPS
import detection.layers as L

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPS_READY = HAS_OPS and all(
    hasattr(L, n) for n in ("ModulatedDeformConv2dPack", "ModulatedDeformRoIPoolPack", "nms")
)


@pytest.mark.slow
@pytest.mark.skipif(not OPS_READY, reason="needs the compiled detection ops")
@pytest.mark.parametrize("procs", [1, 2])
def test_demo_quick(tmp_path, procs):
    ws = tmp_path / "demo"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "demo.py"),
        "--quick",
        "--procs",
        str(procs),
        "--workspace",
        str(ws),
        "--num-infer",
        "2",
        "SOLVER.MAX_ITER",
        "6",
        "SOLVER.STEPS",
        "(4,)",
        "SOLVER.CHECKPOINT_PERIOD",
        "3",
        "DATASETS.SHAPES.NUM_VAL",
        "4",
    ]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Demo (quick) finished" in res.stdout
    assert "shapes_val bbox: AP" in res.stdout and "shapes_val segm: AP" in res.stdout
    # the training ran as `procs` processes (train.py logs the world size)
    assert f"train: {procs} process(es)" in res.stdout + res.stderr
    metrics = json.loads((ws / "inference" / "shapes_val" / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert (ws / "final" / "model_final.pth").is_file()
    assert sorted(p.name for p in (ws / "infer").iterdir()) == [
        "000001.png",
        "000002.png",
        "detections.json",
    ]
    assert (ws / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
