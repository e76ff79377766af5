"""The benchmark suite: op, memory and model benchmarks; every ratio against a baseline measured
in the same run (robust to a loaded machine). Writes Markdown and CSV to benchmarks/out/.
Over 350 lines: the suite's driver, one short function per section and the report writer.

Sections (CPU always, CUDA when available):

- ``ops``: the deformable conv table of ``bench_ops.py`` (ours vs ``F.conv2d`` vs torchvision) and
  the RoI tables of ``bench_roi_ops.py``, and the tables of ``bench_demo_ops.py``: the shapes
  demo's own DCN and deformable RoI pooling shapes against ``F.conv2d`` and RoIAlign, and our DCN
  forward against onnxruntime's ``DeformConv`` on the ResNet-50 shapes;
- ``demo_ops``: only the tables of ``bench_demo_ops.py``;
- ``determinism``: fwd+bwd time with ``torch.use_deterministic_algorithms(True)`` over the
  default mode (the cost of the deterministic backward);
- ``memory``: peak memory of DCN forward+backward against dense conv on the same shape, and the
  effect of ``im2col_step`` on it (the column buffer). CPU: the allocations ATen reports to
  ``torch.profiler`` (``profile_memory=True``) replayed in time order, with the scratch the
  kernel keeps per thread released first so that it counts (``_ext.cpu_workspace_bytes``); CUDA:
  ``torch.cuda.max_memory_allocated``;
- ``model``: training step images/s, peak memory and inference latency of the shapes demo config
  (CPU) and of the paper config at 2 images of 800x1333 (CUDA only; float32 and bf16 autocast),
  each against the same model with dense convs and RoIAlign pooling (the "dense" baseline), plus
  the share of time spent in our ops (``detection::*`` events of ``torch.profiler``), and the
  "floor": the deformable model with its two ops swapped for the dense ones (``ops_as_dense``),
  the part of its cost over the dense model that no kernel can remove.

    python benchmarks/run.py [--sections ops,demo_ops,determinism,memory,model] [--devices cpu,cuda] [--repeat 2]
                             [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch
from torch.autograd import DeviceType
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_ops  # noqa: E402

from detection import _ext  # noqa: E402
from detection.layers import modulated_deform_conv2d  # noqa: E402

SHAPES_CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes.yaml")
PAPER_CONFIG = os.path.join(ROOT, "configs", "e2e_deformconv_mask_rcnn_R_50_C5_1x.yaml")
# what decides whether OpenMP's threads spin or sleep at a barrier: 2-thread steps differ by up
# to 1.4x between the two on a quiet machine (RESULTS.md, eighth and twentieth rounds)
OPENMP_WAITS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# what decides whether a large tensor is fresh pages (a page fault per 4 KiB) or reused heap: set
# by environment, glibc's thresholds stop adapting; an allocator may also be preloaded. The same
# `F.conv2d` forward plus backward took 2.2 or 4.4 ms by the heap's state (RESULTS.md,
# twenty-first round)
ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")

# how the environment line names fma_peak.c's vector widths
WIDTH_NAMES = {"avx512": "AVX-512", "avx2": "AVX2"}


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak bytes allocated above the level at entry while `fn` runs (ATen allocations)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU
    ]
    level = peak = 0
    for _, nbytes in sorted(events):
        level += nbytes
        peak = max(peak, level)
    return peak


def bench_memory(device: str, shapes: list[str]) -> list[dict]:
    rows = []
    for name in shapes:
        tensors, kw = bench_ops._dcn_inputs(bench_ops.SHAPES[name], device)

        def ours(x, offset, mask, weight, bias, **kw):
            return modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)

        def dense(x, offset, mask, weight, bias, **kw):
            return F.conv2d(x, weight, bias, **kw)

        row = {"op": "memory: DCN fwd+bwd", "shape": name, "device": device}
        dense_mb = peak_bytes(bench_ops._fwd_bwd(dense, tensors, kw), device) / 2**20
        row["conv2d_peak_MB"] = dense_mb
        for step in (1, 2):
            kws = dict(kw, im2col_step=step)
            if device == "cpu":  # so that the scratch the CPU kernel keeps counts in its peak
                _ext.cpu_workspace_bytes(release=True)
            mb = peak_bytes(bench_ops._fwd_bwd(ours, tensors, kws), device) / 2**20
            row[f"ours_step{step}_peak_MB"] = mb
            row[f"ours_step{step}/conv2d"] = mb / dense_mb
        rows.append(row)
        print(bench_ops._format_table([row], markdown=False), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------
def bench_determinism(device: str, repeat: int, shapes: list[str]) -> list[dict]:
    """fwd+bwd time with ``torch.use_deterministic_algorithms(True)`` over the default mode, for
    the DCN shapes and the RoI ops (CPU: the same atomic-free kernels, so ~1; CUDA: the
    plane-serial scatters replace the atomic ones)."""
    import bench_roi_ops

    from detection.layers import modulated_deform_roi_pool, roi_align

    def dcn(x, offset, mask, weight, bias, **kw):
        return modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)

    cases = []
    for name in shapes:
        tensors, kw = bench_ops._dcn_inputs(bench_ops.SHAPES[name], device)
        cases.append((f"deform_conv2d {name}", bench_ops._fwd_bwd(dcn, tensors, kw)))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bench_roi_ops.NUM_IMAGES, bench_roi_ops.CHANNELS, bench_roi_ops.HEIGHT,
                    bench_roi_ops.WIDTH, generator=g).to(device)  # fmt: skip
    rois = bench_roi_ops._rois(device)
    scale = 1.0 / bench_roi_ops.STRIDE
    sr = bench_roi_ops.SAMPLING_RATIO
    off = (torch.randn(rois.shape[0], 2, 7, 7, generator=g) * 0.1).to(device)
    msk = torch.rand(rois.shape[0], 1, 7, 7, generator=g).to(device)

    def pool(inp, o, m, **kw):
        return modulated_deform_roi_pool(inp, rois, o, m, output_size=7, spatial_scale=scale,
                                         sampling_ratio=sr)  # fmt: skip

    def align(inp, **kw):
        return roi_align(inp, rois, 7, scale, sr, True)

    cases.append(("modulated_deform_roi_pool 7x7", bench_ops._fwd_bwd(pool, [x, off, msk], {})))
    cases.append(("roi_align 7x7", bench_ops._fwd_bwd(align, [x], {})))
    rows = []
    old = torch.are_deterministic_algorithms_enabled()
    try:
        for name, fn in cases:
            torch.use_deterministic_algorithms(False)
            t_default = bench_ops.time_ms(fn, device, repeat)
            torch.use_deterministic_algorithms(True)
            t_det = bench_ops.time_ms(fn, device, repeat)
            row = {"op": "determinism: fwd+bwd", "case": name, "device": device,
                   "default_ms": t_default, "deterministic_ms": t_det,
                   "deterministic/default": t_det / t_default}  # fmt: skip
            rows.append(row)
            print(bench_ops._format_table([row], markdown=False), flush=True)
    finally:
        torch.use_deterministic_algorithms(old)
    return rows


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def _model_cfg(config: str, dense: bool, device: str, size: tuple[int, int] | None):
    from detection.config import load_config

    cfg = load_config(config, world_size=1)
    cfg.defrost()
    cfg.MODEL.DEVICE = device
    if dense:
        cfg.MODEL.RESNETS.STAGE_WITH_DCN = (False, False, False, False)
        cfg.MODEL.ROI_BOX_HEAD.POOLER = "RoIAlign"
        cfg.MODEL.ROI_MASK_HEAD.POOLER = "RoIAlign"
    if size is not None:
        cfg.INPUT.MIN_SIZE_TRAIN = (size[0],)
        cfg.INPUT.MAX_SIZE_TRAIN = size[1]
        cfg.INPUT.MIN_SIZE_TEST = size[0]
        cfg.INPUT.MAX_SIZE_TEST = size[1]
    cfg.freeze()
    return cfg


def _batch(cfg, n: int, device: str, seed: int = 0):
    from detection.data.synthetic import synthetic_batch

    width = 1333 if cfg.INPUT.MAX_SIZE_TRAIN >= 1000 else None
    return synthetic_batch(cfg, n, seed=seed, width=width, device=device)


def _our_op_share(prof) -> float:
    """CPU time inside our ops (``detection::*``, their GEMMs included: they never nest in one
    another) over the total self CPU time of the profiled step."""
    ka = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ka)
    ours = sum(e.cpu_time_total for e in ka if e.key.startswith("detection::"))
    return ours / max(total, 1e-9)


def gpu_time(ka) -> float:
    """GPU time (us) of a profile's key averages: its device events (kernels, copies, memsets),
    each counted once (a CPU event's device time repeats that of the kernels it launched)."""
    return sum(e.self_device_time_total for e in ka if e.device_type != DeviceType.CPU)


def _our_gpu_time(ka) -> float:
    """GPU time (us) of the kernels our ops launch, the GEMMs they call through ATen included:
    the device time of the ``detection::*`` events with their children's (never nested in one
    another), as ``_our_op_share`` counts the CPU time."""
    return sum(
        e.device_time_total
        for e in ka
        if e.device_type == DeviceType.CPU and e.key.startswith("detection::")
    )


@contextlib.contextmanager
def ops_as_dense():
    """The deformable model with its two ops swapped for their dense counterparts on the same
    tensors: ``F.conv2d`` for the deformable conv, RoIAlign for the deformable RoI pooling. The
    offsets and masks stay in the graph (added times 0), so their predictors still run forward
    and backward. Its time over the dense model's is the floor that no kernel speed-up can go
    below: the work the DCNv2 architecture adds around the ops (offset convs and fcs, the second
    pooling of each head)."""
    from detection.layers import deform_conv, deform_roi_pool
    from detection.layers.roi_align import roi_align

    def conv(input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
             deform_groups=1, im2col_step=64):  # fmt: skip
        out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
        return out + 0 * (offset.sum() + (mask.sum() if mask is not None else 0))

    def pool(input, rois, offset=None, mask=None, *, output_size, spatial_scale=1.0,
             sampling_ratio=0, gamma=0.1):  # fmt: skip
        out = roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned=True)
        for t in (offset, mask):
            if t is not None:
                out = out + 0 * t.sum()
        return out

    saved = deform_conv.modulated_deform_conv2d, deform_roi_pool.modulated_deform_roi_pool
    deform_conv.modulated_deform_conv2d, deform_roi_pool.modulated_deform_roi_pool = conv, pool
    try:
        yield
    finally:
        deform_conv.modulated_deform_conv2d, deform_roi_pool.modulated_deform_roi_pool = saved


def _model_setup(cfg, device: str, n_img: int):
    """(model, optimizer, images, targets): `cfg`'s model in training mode (seed 0), SGD, and a
    synthetic batch of `n_img` images at the config's input size."""
    from detection.modeling import build_detection_model

    torch.manual_seed(0)
    model = build_detection_model(cfg).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    return (model, opt, *_batch(cfg, n_img, device))


def _model_numbers(cfg, device: str, n_img: int, iters: int, amp_dtype) -> dict:
    model, opt, images, targets = _model_setup(cfg, device, n_img)
    amp = (
        torch.autocast(device_type=device, dtype=amp_dtype)
        if amp_dtype is not None
        else torch.autocast(device_type=device, enabled=False)
    )

    def train_step():
        with amp:
            losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    def infer():
        with torch.no_grad(), amp:
            model(images)

    res = {}
    train_step()
    res["train_ms"] = bench_ops.time_ms(train_step, device, iters, warmup=1)
    res["train_img/s"] = n_img / (res["train_ms"] / 1e3)
    res["train_peak_MB"] = peak_bytes(train_step, device) / 2**20
    model.eval()
    res["infer_ms"] = bench_ops.time_ms(infer, device, iters, warmup=1)
    model.train()
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        train_step()
    res["train_share_ours"] = _our_op_share(prof)
    if device == "cuda":
        ka = prof.key_averages()
        res["train_gpu_share_ours"] = _our_gpu_time(ka) / max(gpu_time(ka), 1e-9)
    return res


def bench_model(device: str, repeat: int) -> list[dict]:
    rows = []
    if device == "cpu":
        cases = [("shapes", SHAPES_CONFIG, 4, None, None)]
    else:
        cases = [
            ("paper R-50-C5", PAPER_CONFIG, 2, (800, 1333), None),
            ("paper R-50-C5", PAPER_CONFIG, 2, (800, 1333), torch.bfloat16),
        ]
    for name, config, n_img, size, amp_dtype in cases:
        row = {"op": "model", "config": name, "device": device, "images": n_img,
               "dtype": "bf16 autocast" if amp_dtype is not None else "float32"}  # fmt: skip
        ours = _model_numbers(
            _model_cfg(config, False, device, size), device, n_img, repeat, amp_dtype
        )
        base = _model_numbers(
            _model_cfg(config, True, device, size), device, n_img, repeat, amp_dtype
        )
        with ops_as_dense():
            floor = _model_numbers(
                _model_cfg(config, False, device, size), device, n_img, repeat, amp_dtype
            )
        for k, v in ours.items():
            row[f"dcn_{k}"] = v
        for k in ("train_ms", "train_peak_MB", "infer_ms"):
            row[f"dense_{k}"] = base[k]
            row[f"{k.rsplit('_', 1)[0]}_dcn/dense"] = ours[k] / max(base[k], 1e-9)
        for k in ("train_ms", "infer_ms"):
            row[f"floor_{k}"] = floor[k]
            row[f"{k.rsplit('_', 1)[0]}_floor/dense"] = floor[k] / max(base[k], 1e-9)
        rows.append(row)
        print(bench_ops._format_table([row], markdown=False), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    """The CPU's model name with its vendor, family and model numbers from /proc/cpuinfo (a
    VM's model name can be as vague as "AMD EPYC": family 25 is Zen 3/4, 26 Zen 5)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    ids = [fields["vendor_id"]] if "vendor_id" in fields else []
    ids += [f"{k} {fields[k]}" for k in ("cpu family", "model") if k in fields]
    return f"{cpu} ({', '.join(ids)})" if ids else cpu


@functools.cache
def c_tool_exe(source: str, *flags: str) -> str | None:
    """The C program `source` of this directory compiled with the system's C compiler (-O2 and
    `flags`), once per version of the source, into the temporary directory, and looked up once
    per process; None where there is no compiler or it fails (not Linux)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), source)
    with open(src, "rb") as f:
        tag = hashlib.sha256(f.read()).hexdigest()[:12]
    exe = os.path.join(tempfile.gettempdir(), f"detection-{os.path.splitext(source)[0]}-{tag}")
    if not os.path.exists(exe):
        tmp = f"{exe}.{os.getpid()}"
        try:
            subprocess.run([cc, "-O2", *flags, "-o", tmp, src], check=True, capture_output=True)
            os.replace(tmp, exe)
        except (OSError, subprocess.SubprocessError):
            return None
    return exe


def core_latency_exe() -> str | None:
    """`core_latency.c` compiled (`c_tool_exe`)."""
    return c_tool_exe("core_latency.c", "-pthread")


def core_round_trip_ns() -> tuple[int, int, float] | None:
    """(cpu_a, cpu_b, ns): the round trip of one cache line between the first two CPUs this
    process may run on (`core_latency_exe()`), or None where that cannot run (one CPU, no
    compiler, not Linux). Tens of ns: the two share a cache; hundreds: they do not, and a kernel
    whose parallel phases pass data between threads pays for it (RESULTS.md, nineteenth
    round)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    exe = core_latency_exe() if len(cpus) >= 2 else None
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, str(cpus[0]), str(cpus[1])],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return cpus[0], cpus[1], float(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


@functools.cache
def fma_peak_gflops() -> dict[str, float] | None:
    """{width: GFLOP/s}: one core's float32 FMA throughput for each vector width the CPU has
    ("avx512", "avx2"; `fma_peak.c`, measured once per process: about 0.4 s), or None where that
    cannot run (not x86-64, no AVX2, no compiler). What a GEMM or a sampling loop at one thread can approach: the share of it an op
    reaches is what its kernel leaves (RESULTS.md, twenty-eighth round)."""
    exe = c_tool_exe("fma_peak.c")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe], check=True, capture_output=True, text=True, timeout=30)
        return {w: float(v) for w, v in (line.split() for line in out.stdout.splitlines())}
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _env_values(names: tuple[str, ...]) -> str:
    """'NAME value, ...' for the environment variables `names` ('unset' where absent)."""
    return ", ".join(f"{k} {os.environ.get(k, 'unset')}" for k in names)


def environment() -> str:
    cpu = _cpu_name()
    lines = [
        f"- machine: {cpu}, {os.cpu_count()} logical CPUs; torch threads {torch.get_num_threads()}"
    ]
    trip = core_round_trip_ns()
    if trip is not None:
        a, b, ns = trip
        lines.append(f"- core-to-core round trip, CPUs {a} and {b}: {ns:.0f} ns (one cache line)")
    peak = fma_peak_gflops()
    if peak:
        widths = ", ".join(f"{WIDTH_NAMES.get(w, w)} {g:.0f}" for w, g in peak.items())
        lines.append(f"- one core's float32 FMA peak, GFLOP/s: {widths}")
    lines.append(
        f"- OpenMP's waiting threads: {_env_values(OPENMP_WAITS)} (libgomp spins when both are unset)"
    )
    libc = " ".join(filter(None, platform.libc_ver())) or "libc"
    lines.append(f"- memory allocator: {libc}; {_env_values(ALLOCATOR_ENV)}")
    lines.append(f"- python {platform.python_version()}, torch {torch.__version__}")
    try:
        import torchvision

        lines[-1] += f", torchvision {torchvision.__version__}"
    except ImportError:
        pass
    from detection import _ext

    if _ext.HAS_OPS:
        gemm, large = _ext.cpu_backward_gemm(), _ext.cpu_weight_grad_gemm(2**20 + 1)
        lines.append(
            f"- CPU ISA of our sampling loops: {_ext.cpu_isa()}; ATen's: "
            f"{torch.backends.cpu.get_cpu_capability()}; the DCN forward: "
            f"{'fused where a layer qualifies' if _ext.cpu_fused_forward() else 'columns'}; "
            f"the DCN backward GEMMs' library: {gemm}"
            + (f" (weight gradients over 1 MiB: {large})" if large != gemm else "")
        )
    if torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    else:
        lines.append("- GPU: none (CUDA sections not measured)")
    lines.append(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="ops,determinism,memory,model")
    parser.add_argument("--devices", default=None, help="cpu and/or cuda (default: all available)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per measurement (best)")
    parser.add_argument("--shapes", default=",".join(bench_ops.SHAPES))
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    args = parser.parse_args(argv)
    devices = (
        args.devices.split(",")
        if args.devices
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    sections = [s for s in args.sections.split(",") if s]
    shapes = [s for s in args.shapes.split(",") if s]
    for s in sections:
        if s not in ("ops", "demo_ops", "determinism", "memory", "model"):
            parser.error(f"--sections: unknown section {s!r}")
    env = environment()
    print(env, flush=True)
    rows: list[dict] = []
    for device in devices:
        if "ops" in sections:
            rows += bench_ops.bench_deform_conv(device, args.repeat, shapes)
            import bench_roi_ops

            rows += bench_roi_ops.run(device, args.repeat)
        if "ops" in sections or "demo_ops" in sections:
            import bench_demo_ops

            rows += bench_demo_ops.run(device, args.repeat, shapes)
        if "determinism" in sections:
            rows += bench_determinism(device, args.repeat, shapes)
        if "memory" in sections:
            rows += bench_memory(device, shapes)
        if "model" in sections:
            rows += bench_model(device, args.repeat)
    if "model" in sections and "cuda" not in devices:
        print("model: the paper config (2 images 800x1333) runs on CUDA only; skipped")
    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, "results.md")
    with open(md, "w") as f:
        f.write("## Environment\n\n" + env + "\n\n" + bench_ops._tables(rows, markdown=True))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    print()
    print(bench_ops._tables(rows, markdown=False))
    print(f"wrote {md} and results.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
