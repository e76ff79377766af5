"""Two "nodes" on this machine: two torchrun launchers, `--nnodes 2`, one process each, meeting
at a loopback rendezvous (127.0.0.1), training the tiny config for a few iterations with gloo, as
the README's 2-node launch does across machines."""

import importlib.util
import os
import socket
import subprocess
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "two_nodes_helpers", os.path.join(_HERE, "test_tools.py")
)
tools_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tools_helpers)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tools_helpers.OPS_READY, reason="needs the compiled detection ops"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_over_loopback(tmp_path):
    ws, data = str(tmp_path / "ws"), str(tmp_path / "datasets")
    opts = tools_helpers.TINY + ["SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)"]
    opts += ["SOLVER.CHECKPOINT_PERIOD", "3", "WORKSPACE", ws, "DATASETS.ROOT", data]
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for node_rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--node_rank", str(node_rank), "--nproc_per_node", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(port),
               os.path.join(tools_helpers.ROOT, "tools", "train.py"),
               "--config", tools_helpers.CONFIG, *opts]  # fmt: skip
        log = open(tmp_path / f"node{node_rank}.log", "w")
        procs.append((subprocess.Popen(cmd, cwd=tools_helpers.ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, text=True), log))  # fmt: skip
    try:
        codes = [p.wait(timeout=900) for p, _ in procs]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
            log.close()
    logs = [(tmp_path / f"node{i}.log").read_text() for i in (0, 1)]
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in logs)
    assert "train: 2 process(es)" in logs[0]
    assert "model replicas identical across 2 ranks" in logs[0]
    assert os.path.isfile(os.path.join(ws, "final", "model_final.pth"))
    assert sorted(os.listdir(os.path.join(ws, "model"))) == ["last_checkpoint", "model_0000003.pth"]
