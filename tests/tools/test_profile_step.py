"""benchmarks/profile_step.py: the GPU side of its report (kernel time against the wall, launches,
synchronisations) computed from a profile's events, a CPU profile of a tiny config's step with
the Python-level torch calls by where they come from, and one error line for bad arguments."""

import types

import pytest
import torch

from testutils.tools import CONFIG, OPS_READY, load_benchmark

CPU, CUDA = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA


def _profile_step():
    return load_benchmark("profile_step")


def _event(key, count, device_type=CPU, self_cpu=0.0, device=0.0, device_total=None):
    """A key average: `device` its own device time, `device_total` with its children's."""
    return types.SimpleNamespace(
        key=key, count=count, device_type=device_type, self_cpu_time_total=self_cpu,
        cpu_time_total=self_cpu, self_device_time_total=device,
        device_time_total=device if device_total is None else device_total,
    )  # fmt: skip


def test_gpu_side_of_the_report():
    ps = _profile_step()
    steps, wall_ms = 2, 40.0
    ka = [
        _event("aten::add", 10, self_cpu=3000.0, device=4000.0),
        # our op: the GEMM it calls (12 ms, an aten::mm child) counts as ours
        _event("detection::modulated_deform_conv2d", 2, self_cpu=500.0, device_total=12000.0),
        _event("aten::mm", 8, self_cpu=200.0, device=12000.0),
        _event("cudaLaunchKernel", 30, self_cpu=900.0),
        _event("cudaLaunchKernelExC", 4, self_cpu=100.0),
        _event("cudaStreamSynchronize", 4, self_cpu=50.0),
        _event("cudaDeviceSynchronize", 1, self_cpu=10.0),  # the profiler's own, left out
        _event("cudaMemcpyAsync", 6, self_cpu=60.0),
        _event("gemm_kernel", 8, CUDA, device=12000.0),
        _event("elementwise_kernel", 26, CUDA, device=4000.0),
    ]
    text = ps.report(ka, steps, wall_ms, top=5, device="cuda")
    # the device events (12 + 4 ms) over 2 steps: 8 ms a step, 20 % of 40 ms (the CPU events'
    # device time repeats theirs); ours 12 / 2; (30 + 4) / 2 launches; (4 + 1 - 1) / 2
    # synchronisations; 6 / 2 copies
    assert "kernels and copies 8.0 ms per step, 20 % of the wall time" in text
    assert "in our ops (their GEMMs included) 6.0 ms; 17 kernel launches" in text
    assert "2.0 host synchronisations and 3.0 cudaMemcpy calls per step" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0] == "| `gemm_kernel` | 6.00 | 4 |" and rows[1].startswith(
        "| `elementwise_kernel`"
    )
    assert "| `aten::add` | 1.50 |" in text  # the CPU table: 3 ms over 2 steps
    assert "aten op calls per step: 9" in text


def test_cpu_report_has_no_gpu_lines():
    text = _profile_step().report([_event("aten::mm", 2, self_cpu=1000.0)], 1, 2.0, top=5)
    assert "GPU:" not in text and "| `aten::mm` | 1.00 | 100.0 % | 2 |" in text


@pytest.mark.slow
@pytest.mark.skipif(not OPS_READY, reason="needs the compiled detection ops")
def test_cpu_profile_of_a_tiny_step(capsys):
    ps = _profile_step()
    assert ps.main(["--steps", "1", "--top", "40", "--config", CONFIG, "--images", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cpu, threads") and "GPU:" not in out
    assert "| `detection::modulated_deform_conv2d` |" in out
    total = int(out.split("torch calls from Python in one step (this thread): ")[1].split()[0])
    counts = [
        int(line.rsplit("|", 2)[1]) for line in out.splitlines() if line.startswith("| `detection/")
    ]
    assert total > 0 and sum(counts) <= total
    assert "| `detection/modeling/box_coder.py:encode` |" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "0"], "error: --steps must be at least 1"),
        (["--images", "0"], "error: --images must be at least 1"),
        (["--config", "/nonexistent.yaml"], "error: --config /nonexistent.yaml: no such file"),
    ],
)
def test_bad_arguments(args, message, capsys):
    assert _profile_step().main(args) == 2
    assert capsys.readouterr().err.strip() == message


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_a_gpu(capsys):
    assert _profile_step().main(["--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == "error: --device cuda: no CUDA device is visible"
