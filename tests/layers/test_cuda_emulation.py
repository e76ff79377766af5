"""The CUDA emulation library itself (detection._C_cuda_emu, built with
DETECTION_CUDA_EMULATION=1): the schemas it registers, and the emulator's barriers, order of
blocks and threads, and launch limits, through its self-test kernels (csrc/cuda_emu/selftest.cpp).
The CUDA kernel tests proper are in the op test files (`cuda_backend` fixture)."""

import pytest
import torch

from detection import _ext

pytestmark = [
    pytest.mark.skipif(not _ext.HAS_OPS, reason="compiled ops not built"),
    pytest.mark.cuda_emu,
]


@pytest.fixture
def emu(cuda_emu_backend):
    return cuda_emu_backend.ops


def _schemas(namespace):
    return {
        str(s).split("(")[0].split("::", 1)[1]: str(s).split("::", 1)[1]
        for s in torch._C._jit_get_all_schemas()
        if str(s).startswith(namespace + "::")
    }


def test_schemas_are_those_of_detection(emu):
    ours = _schemas("detection")
    # library queries and settings, not ops
    for query in ("_cuda_version", "_cpu_isa", "_cpu_backward_gemm", "_cpu_weight_grad_gemm",
                  "_cpu_set_backward_gemm", "_cpu_fused_forward", "_cpu_set_fused_forward",
                  "_cpu_workspace"):  # fmt: skip
        ours.pop(query)
    emulated = {
        k: v for k, v in _schemas("detection_cuda_emu").items() if not k.startswith("_emu_")
    }
    assert len(ours) == 7, sorted(ours)
    assert emulated == ours


@pytest.mark.parametrize("threads", [1, 2, 33, 256, 1024])
def test_barriers_hold(emu, threads):
    for salt in (1000, 5000):
        out = emu._emu_barrier(threads, salt)
        t = torch.arange(threads)
        expected = (salt + (t + 1) % threads) + (2 * salt + (t + threads - 1) % threads)
        assert torch.equal(out, expected), salt


@pytest.mark.parametrize("grid, block", [((40, 1, 1), (64, 1, 1)), ((5, 3, 2), (8, 2, 3))])
def test_every_thread_runs_once_in_a_shuffled_order_new_per_launch(emu, grid, block):
    first = emu._emu_order(list(grid), list(block))
    second = emu._emu_order(list(grid), list(block))
    n = first.numel()
    for order in (first, second):
        assert torch.equal(order.sort().values, torch.arange(n))  # each thread exactly once
        assert not torch.equal(order, torch.arange(n))  # not the natural order
    assert not torch.equal(first, second)
    # blocks are run one at a time: the ranks of one block's threads are consecutive
    per_block = first.view(-1, block[0] * block[1] * block[2])
    assert torch.equal(per_block.max(1).values - per_block.min(1).values,
                       torch.full((per_block.shape[0],), per_block.shape[1] - 1))  # fmt: skip


@pytest.mark.parametrize(
    "grid, block, shared, what",
    [
        ((1, 1, 1), (1025, 1, 1), 0, "block"),
        ((1, 1, 1), (512, 2, 2), 0, "block"),
        ((1, 1, 1), (1, 1, 65), 0, "block"),
        ((1, 1, 1), (0, 1, 1), 0, "block"),
        ((0, 1, 1), (32, 1, 1), 0, "grid"),
        ((1, 65536, 1), (1, 1, 1), 0, "grid"),
        ((1, 1, 65536), (1, 1, 1), 0, "grid"),
        ((1, 1, 1), (32, 1, 1), 48 * 1024 + 1, "shared memory"),
    ],
)
def test_launch_limits_of_a_gpu_are_enforced(emu, grid, block, shared, what):
    with pytest.raises(RuntimeError, match=what):
        emu._emu_launch(list(grid), list(block), shared)


def test_launches_at_the_limits_run(emu):
    emu._emu_launch([1, 1, 1], [1024, 1, 1], 48 * 1024)
    emu._emu_launch([1, 1, 1], [32, 32, 1], 0)
    emu._emu_launch([1, 1, 1], [1, 16, 64], 0)
    emu._emu_launch([1, 65535, 1], [1, 1, 1], 0)
