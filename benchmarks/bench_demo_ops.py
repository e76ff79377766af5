"""The shapes demo's own op shapes, and our DCN forward against onnxruntime's ``DeformConv``.

Every ratio is against a baseline measured in the same run (best of ``repeat`` after a warm-up).

- ``demo_dcn_rows``: the modulated deformable convs of the demo config
  (``configs/shapes/e2e_deformconv_mask_rcnn_shapes.yaml``), at the shapes its model calls them
  with on a batch of 4 images at its 256-pixel input (read from the model by forward hooks, so
  the table follows the config): forward and forward+backward against ``F.conv2d`` on the same
  shape (the dense twin's conv);
- ``demo_roi_rows``: modulated deformable RoI pooling (offset and mask given) at the demo's
  head shapes (the pooled map and output sizes read from the model the same way; 100 and 300
  RoIs) against torchvision's RoIAlign (aligned) and our RoIAlign, forward and forward+backward;
- ``onnxruntime_rows``: our forward on the ResNet-50 shapes of ``bench_ops.SHAPES`` against
  onnxruntime's ``DeformConv`` (opset 19) on the same inputs, with the same number of threads;
  the outputs are compared first (max abs difference in the row). Needs ``onnx`` and
  ``onnxruntime`` (``pip install -e .[bench]``); without them the rows are skipped.

    python benchmarks/bench_demo_ops.py [--repeat 3] [--skip-onnxruntime]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_ops  # noqa: E402

from detection.layers import modulated_deform_conv2d, modulated_deform_roi_pool, roi_align  # noqa: E402

SHAPES_CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes.yaml")
DEMO_IMAGES = 4
DEMO_ROIS = (100, 300)


def demo_shapes() -> tuple[list[tuple], list[tuple]]:
    """The demo model's DCN calls as bench_ops shape tuples (N, C_in, C_out, H, W, k, stride,
    padding, dilation), in call order without repeats, and its deformable RoI poolers as (C, H, W,
    output size, spatial scale, sampling ratio, image height, image width); from one training
    forward of the demo config on synthetic images."""
    import run

    from detection.layers.deform_conv import DeformConv2d
    from detection.layers.deform_roi_pool import ModulatedDeformRoIPool
    from detection.modeling import build_detection_model

    cfg = run._model_cfg(SHAPES_CONFIG, False, "cpu", None)
    torch.manual_seed(0)
    model = build_detection_model(cfg).train()
    images, targets = run._batch(cfg, DEMO_IMAGES, "cpu")
    img_h, img_w = images.tensors.shape[-2:]
    convs: dict[tuple, None] = {}
    pools: dict[tuple, None] = {}

    def conv_hook(mod, args):
        n, c, h, w = args[0].shape
        k = mod.kernel_size
        assert k[0] == k[1] and mod.stride[0] == mod.stride[1], "square kernels only"
        convs[(n, c, mod.out_channels, h, w, k[0], mod.stride[0], mod.padding[0],
               mod.dilation[0])] = None  # fmt: skip

    def pool_hook(mod, args):
        _, c, h, w = args[0].shape
        ph, pw = mod.output_size
        assert ph == pw, "square outputs only"
        pools[(c, h, w, ph, mod.spatial_scale, mod.sampling_ratio, img_h, img_w)] = None

    handles = []
    for m in model.modules():
        if isinstance(m, DeformConv2d):
            handles.append(m.register_forward_pre_hook(conv_hook))
        elif isinstance(m, ModulatedDeformRoIPool):
            handles.append(m.register_forward_pre_hook(pool_hook))
    with torch.no_grad():
        model(images, targets)
    for h in handles:
        h.remove()
    return list(convs), list(pools)


def _shape_name(shape: tuple) -> str:
    n, cin, cout, h, w, k, s, p, d = shape
    name = f"N={n},{cin}->{cout},{h}x{w},k{k}"
    return name + (f",s{s}" if s != 1 else "") + (f",d{d}" if d != 1 else "")


def demo_dcn_rows(device: str, repeat: int, shapes: list[tuple]) -> list[dict]:
    def ours(x, offset, mask, weight, bias, **kw):
        return modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)

    def dense(x, offset, mask, weight, bias, **kw):
        return F.conv2d(x, weight, bias, **kw)

    rows = []
    for shape in shapes:
        tensors, kw = bench_ops._dcn_inputs(shape, device)
        row = {"op": "demo modulated_deform_conv2d", "shape": _shape_name(shape), "device": device}
        for label, fn in (("ours", ours), ("conv2d", dense)):
            with torch.no_grad():
                row[f"{label}_fwd_ms"] = bench_ops.time_ms(
                    lambda fn=fn: fn(*tensors, **kw), device, repeat
                )
            row[f"{label}_fwdbwd_ms"] = bench_ops.time_ms(
                bench_ops._fwd_bwd(fn, tensors, kw), device, repeat
            )
        row["fwd_ours/conv2d"] = row["ours_fwd_ms"] / row["conv2d_fwd_ms"]
        row["fwdbwd_ours/conv2d"] = row["ours_fwdbwd_ms"] / row["conv2d_fwdbwd_ms"]
        rows.append(row)
        print(bench_ops._format_table([row], markdown=False), flush=True)
    return rows


def _demo_rois(num: int, img_h: int, img_w: int, images: int, device: str, seed: int = 0):
    """Proposal-like boxes of 8 px to half the image inside `images` images of img_h x img_w."""
    g = torch.Generator().manual_seed(seed)
    wh = 8 + torch.rand(num, 2, generator=g) * (min(img_h, img_w) / 2 - 8)
    x1 = torch.rand(num, generator=g) * (img_w - wh[:, 0])
    y1 = torch.rand(num, generator=g) * (img_h - wh[:, 1])
    b = torch.arange(num) % images
    return torch.stack([b.float(), x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], 1).to(device)


def demo_roi_rows(device: str, repeat: int, pools: list[tuple]) -> list[dict]:
    import torchvision

    rows = []
    for c, h, w, size, scale, sr, img_h, img_w in pools:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(DEMO_IMAGES, c, h, w, generator=g).to(device)
        for num in DEMO_ROIS:
            rois = _demo_rois(num, img_h, img_w, DEMO_IMAGES, device)
            off = (torch.randn(num, 2, size, size, generator=g) * 0.1).to(device)
            msk = torch.rand(num, 1, size, size, generator=g).to(device)

            def deform(inp, o, m, rois=rois, size=size, scale=scale, sr=sr):
                return modulated_deform_roi_pool(inp, rois, o, m, output_size=size,
                                                 spatial_scale=scale, sampling_ratio=sr)  # fmt: skip

            def tv_align(inp, rois=rois, size=size, scale=scale, sr=sr):
                return torchvision.ops.roi_align(inp, rois, size, scale, sr, True)

            def our_align(inp, rois=rois, size=size, scale=scale, sr=sr):
                return roi_align(inp, rois, size, scale, sr, True)

            leaves = [t.clone().requires_grad_() for t in (x, off, msk)]
            x_leaf = [x.clone().requires_grad_()]
            row = {"op": "demo modulated_deform_roi_pool", "device": device,
                   "shape": f"R={num},C={c},{h}x{w},out={size}x{size},sr={sr}"}  # fmt: skip
            with torch.no_grad():
                row["ours_fwd_ms"] = bench_ops.time_ms(lambda: deform(x, off, msk), device, repeat)
                row["tv_roialign_fwd_ms"] = bench_ops.time_ms(lambda: tv_align(x), device, repeat)
                row["our_roialign_fwd_ms"] = bench_ops.time_ms(lambda: our_align(x), device, repeat)
            row["ours_fwdbwd_ms"] = bench_ops.time_ms(_fwd_bwd(deform, leaves), device, repeat)
            row["tv_roialign_fwdbwd_ms"] = bench_ops.time_ms(
                _fwd_bwd(tv_align, x_leaf), device, repeat
            )
            row["our_roialign_fwdbwd_ms"] = bench_ops.time_ms(
                _fwd_bwd(our_align, x_leaf), device, repeat
            )
            for phase in ("fwd", "fwdbwd"):
                for base in ("tv_roialign", "our_roialign"):
                    row[f"{phase}_ours/{base}"] = (
                        row[f"ours_{phase}_ms"] / row[f"{base}_{phase}_ms"]
                    )
            rows.append(row)
            print(bench_ops._format_table([row], markdown=False), flush=True)
    return rows


def _fwd_bwd(fn, leaves):
    def run() -> None:
        for t in leaves:
            t.grad = None
        out = fn(*leaves)
        out.backward(torch.ones_like(out))

    return run


def _onnx_deform_conv(shape: tuple, path: str) -> None:
    """A one-node ONNX model: DeformConv (opset 19) with inputs X, W, offset, B, mask."""
    import onnx
    from onnx import TensorProto, helper

    n, cin, cout, h, w, k, s, p, d = shape
    ho = (h + 2 * p - (d * (k - 1) + 1)) // s + 1
    wo = (w + 2 * p - (d * (k - 1) + 1)) // s + 1

    def vi(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    node = helper.make_node(
        "DeformConv", ["X", "W", "offset", "B", "mask"], ["Y"], dilations=[d, d], group=1,
        kernel_shape=[k, k], offset_group=1, pads=[p, p, p, p], strides=[s, s],
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "deform_conv",
        [vi("X", [n, cin, h, w]), vi("W", [cout, cin, k, k]), vi("offset", [n, 2 * k * k, ho, wo]),
         vi("B", [cout]), vi("mask", [n, k * k, ho, wo])],
        [vi("Y", [n, cout, ho, wo])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def onnxruntime_rows(repeat: int, shape_names: list[str]) -> list[dict]:
    """Our DCN forward against onnxruntime's DeformConv on the CPU (the same float32 inputs, the
    same thread count); [] without onnx / onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime rows skipped: pip install -e .[bench] (onnx, onnxruntime)")
        return []
    import tempfile

    rows = []
    for name in shape_names:
        shape = bench_ops.SHAPES[name]
        (x, offset, mask, weight, bias), kw = bench_ops._dcn_inputs(shape, "cpu")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "deform_conv.onnx")
            _onnx_deform_conv(shape, path)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feeds = {"X": x.numpy(), "W": weight.numpy(), "offset": offset.numpy(),
                 "B": bias.numpy(), "mask": mask.numpy()}  # fmt: skip
        with torch.no_grad():
            ours = modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)
            t_ours = bench_ops.time_ms(
                lambda: modulated_deform_conv2d(x, offset, mask, weight, bias, **kw), "cpu", repeat
            )
        theirs = torch.from_numpy(sess.run(None, feeds)[0])
        t_ort = bench_ops.time_ms(lambda: sess.run(None, feeds), "cpu", repeat)
        row = {"op": "DCN forward vs onnxruntime DeformConv", "shape": name, "device": "cpu",
               "N,C,H,W": "{},{},{},{}".format(*shape[0:2], *shape[3:5]),
               "max_abs_diff": float((ours - theirs).abs().max()),
               "ours_fwd_ms": t_ours, "onnxruntime_fwd_ms": t_ort,
               "onnxruntime/ours": t_ort / t_ours}  # fmt: skip
        rows.append(row)
        print(bench_ops._format_table([row], markdown=False), flush=True)
    return rows


def run(device: str, repeat: int, resnet_shapes: list[str], onnxruntime: bool = True) -> list[dict]:
    convs, pools = demo_shapes()
    rows = demo_dcn_rows(device, repeat, convs) + demo_roi_rows(device, repeat, pools)
    if onnxruntime and device == "cpu":
        rows += onnxruntime_rows(repeat, resnet_shapes)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best)")
    parser.add_argument("--skip-onnxruntime", action="store_true")
    args = parser.parse_args(argv)
    rows = run("cpu", args.repeat, list(bench_ops.SHAPES), not args.skip_onnxruntime)
    print()
    print(bench_ops._tables(rows, markdown=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
