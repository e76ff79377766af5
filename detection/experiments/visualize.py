"""Pictures of how deformable convolutions sample (the figures of the DCN papers, for small nets).
Over 350 lines: the three figures share the tracing of sampling points through the layers.

(a) Sampling locations: for one output position of the last deformable layer, its kh*kw sampling
    points (with their learned offsets) are traced back through every earlier deformable layer:
    each point of layer j is a position in layer j-1's output map, whose own kh*kw offset points
    are taken there (offsets bilinearly interpolated at fractional positions), and so on, giving
    (kh*kw)^L points in input-image pixels for L deformable layers. Between layers, positions are
    mapped through the resolution change of the max-pools: a map with stride s relative to the
    image has its pixel u centred on image pixel `s * u + (s - 1) / 2` (2x2 pools, no padding).
(b) Input gradients: |d unit / d input| of the centre unit of the last conv block (sum over
    channels) and of the predicted class logit, showing which pixels the network looks at.

Layer geometry follows the conv convention of the ops (docs/CONVENTIONS.md): sample
position `y = ho*sh - ph + i*dh + dy`, offsets interleaved (dy, dx) per kernel point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass
class DeformSampling:
    """What one deformable conv did on one image.

    offset: Tensor[2*K, Ho, Wo] ((dy, dx) per kernel point k = i*kw + j), mask: Tensor[K, Ho, Wo]
    (DCNv2) or None (DCNv1); in_hw / out_hw: its input and output map sizes; stride, padding,
    dilation, kernel_size: (h, w) pairs; source: "op" when offset and mask were read from the
    deformable-conv op's arguments, "predictor" when recomputed from `conv_offset`.
    """

    offset: torch.Tensor
    mask: torch.Tensor | None
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    kernel_size: tuple[int, int]
    source: str = "op"


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


class _CaptureDeformOps(TorchDispatchMode):
    """Records the offset and mask arguments of every deformable-conv op call (forward only)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name()
        if "deform_conv" in name and "backward" not in name:
            names = [a.name for a in func._schema.arguments]
            bound = dict(zip(names, args), **kwargs)
            if "offset" in bound:
                self.calls.append((bound["offset"].detach(), _maybe(bound.get("mask"))))
        return func(*args, **kwargs)


def _maybe(t):
    return t.detach() if isinstance(t, torch.Tensor) else None


def _from_predictor(module: nn.Module, x: torch.Tensor):
    """Offset and mask from a module's `conv_offset` output by the Pack convention: DCNv2
    (`module.modulation`, or 3*K channels) splits it into o1, o2, m -> offset cat(o1, o2), mask
    sigmoid(m); DCNv1 (2*K channels) predicts the offset itself."""
    out = module.conv_offset(x)
    weight = getattr(module, "weight", None)
    kh, kw = tuple(weight.shape[-2:]) if weight is not None else _pair(module.kernel_size)
    modulated = getattr(module, "modulation", out.shape[1] == 3 * kh * kw)
    if modulated:
        o1, o2, m = out.chunk(3, dim=1)
        return torch.cat([o1, o2], dim=1), m.sigmoid()
    return out, None


@torch.no_grad()
def capture_sampling_batch(model: nn.Module, images: torch.Tensor) -> list[list[DeformSampling]]:
    """Run `model` on `images` `[N, 1, H, W]`; for each image, one DeformSampling per deformable
    conv (modules with a `conv_offset` predictor), in forward order."""
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    layers = [m for m in model.modules() if hasattr(m, "conv_offset")]
    seen: list[tuple[nn.Module, tuple, tuple, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out: seen.append((mod, inp[0].shape, out.shape, inp[0]))
        )
        for m in layers
    ]
    model.eval()
    try:
        with _CaptureDeformOps() as cap:
            model(images)
    finally:
        for h in hooks:
            h.remove()
    source = "op"
    if len(cap.calls) != len(seen):  # the op is not dispatched as expected: use the predictor
        cap.calls = [_from_predictor(mod, inp) for mod, _, _, inp in seen]
        source = "predictor"
    result: list[list[DeformSampling]] = [[] for _ in range(len(images))]
    for (mod, in_shape, out_shape, _), (offset, mask) in zip(seen, cap.calls):
        weight = getattr(mod, "weight", None)
        ks = (
            tuple(weight.shape[-2:])
            if weight is not None
            else _pair(getattr(mod, "kernel_size", 3))
        )
        for b in range(len(images)):
            result[b].append(
                DeformSampling(
                    offset=offset[b].float(),
                    mask=None if mask is None else mask[b].float(),
                    in_hw=tuple(in_shape[-2:]),
                    out_hw=tuple(out_shape[-2:]),
                    stride=_pair(getattr(mod, "stride", 1)),
                    padding=_pair(getattr(mod, "padding", 1)),
                    dilation=_pair(getattr(mod, "dilation", 1)),
                    kernel_size=_pair(ks),
                    source=source,
                )
            )
    return result


def capture_sampling(model: nn.Module, image: torch.Tensor) -> list[DeformSampling]:
    """`capture_sampling_batch` for one image `[1, 1, H, W]`."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be [1, C, H, W], got {tuple(image.shape)}")
    return capture_sampling_batch(model, image)[0]


def _to_image(p: torch.Tensor, hw: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    """Positions `[M, 2]` (y, x) in a map of size `hw` -> input-image pixels."""
    s = torch.tensor([image_hw[0] / hw[0], image_hw[1] / hw[1]], dtype=p.dtype)
    return s * p + (s - 1) / 2


def _from_image(p: torch.Tensor, hw: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    s = torch.tensor([image_hw[0] / hw[0], image_hw[1] / hw[1]], dtype=p.dtype)
    return (p - (s - 1) / 2) / s


def unit_to_image(unit: tuple[int, int], hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple:
    """(row, col) of a map of size `hw` -> (y, x) in input-image pixels."""
    return tuple(_to_image(torch.tensor([unit], dtype=torch.float64), hw, image_hw)[0].tolist())


def _interp(field: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Bilinear values of `field` `[C, H, W]` at positions `p` `[M, 2]` (y, x; clamped to the
    map) -> `[M, C]`."""
    h, w = field.shape[-2:]
    gy = p[:, 0].clamp(0, h - 1) / max(h - 1, 1) * 2 - 1
    gx = p[:, 1].clamp(0, w - 1) / max(w - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)
    out = F.grid_sample(field[None], grid, mode="bilinear", align_corners=True)
    return out[0, :, 0].t()


def trace_sampling_points(
    layers: list[DeformSampling],
    position: tuple[float, float] | None,
    image_hw: tuple[int, int],
    zero_offsets: bool = False,
) -> tuple[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]]:
    """Trace the sampling points of the output unit at `position` (y, x input pixels; None = the
    centre of the last layer's output map) back through `layers`.

    Returns (the unit's (row, col) in the last output map, levels) where levels[d] =
    (points float[(K)^(d+1), 2] (y, x) in input-image pixels, weights float[(K)^(d+1)]) for depth
    d = 0 (the last layer's K points) .. L-1 (all K^L points in the first deformable layer's
    input). Weights are the product of the modulation masks along each path (1 for DCNv1).
    `zero_offsets` traces the same layers as regular convs (fixed grids).
    """
    if not layers:
        raise ValueError("no deformable layers to trace (is this a regular model?)")
    last = layers[-1]
    ho, wo = last.out_hw
    if position is None:
        unit = ((ho - 1) // 2, (wo - 1) // 2)
    else:
        u = _from_image(torch.tensor([position], dtype=torch.float64), last.out_hw, image_hw)[0]
        unit = (
            int(np.clip(round(float(u[0])), 0, ho - 1)),
            int(np.clip(round(float(u[1])), 0, wo - 1)),
        )
    points = torch.tensor([unit], dtype=torch.float64)
    weights = torch.ones(1, dtype=torch.float64)
    levels = []
    for j in range(len(layers) - 1, -1, -1):
        layer = layers[j]
        kh, kw = layer.kernel_size
        K = kh * kw
        ii, jj = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing="ij")
        base = torch.stack([ii.flatten() * layer.dilation[0], jj.flatten() * layer.dilation[1]], -1)
        origin = points * torch.tensor(layer.stride, dtype=torch.float64) - torch.tensor(
            layer.padding
        )
        samples = origin[:, None, :] + base[None].double()  # [M, K, 2]
        if not zero_offsets:
            off = _interp(layer.offset.double(), points).view(-1, K, 2)  # (dy, dx) pairs
            samples = samples + off
            if layer.mask is not None:
                weights = (weights[:, None] * _interp(layer.mask.double(), points)).flatten()
            else:
                weights = weights.repeat_interleave(K)
        else:
            weights = weights.repeat_interleave(K)
        samples = samples.reshape(-1, 2)
        in_image = _to_image(samples, layer.in_hw, image_hw)
        levels.append((in_image.numpy(), weights.numpy().copy()))
        if j > 0:
            points = _from_image(in_image, layers[j - 1].out_hw, image_hw)
    return unit, levels


def sampling_spread(
    model: nn.Module, images: torch.Tensor, position: tuple[float, float] | None = None
) -> tuple[np.ndarray, float]:
    """How far the traced sampling points of one output unit reach, per image.

    For each image of `images` `[N, 1, H, W]`: the mask-weighted mean Euclidean distance (input
    pixels) of the deepest level's points (all (K)^L of them) from the unit's own position. Returns
    (float[N] for the deformable model, the same number for the fixed grid of these layers).
    """
    hw = tuple(images.shape[-2:])
    spreads, fixed = [], 0.0
    for layers in capture_sampling_batch(model, images):
        unit, levels = trace_sampling_points(layers, position, hw)
        centre = np.array(unit_to_image(unit, layers[-1].out_hw, hw))
        pts, w = levels[-1]
        spreads.append(float((np.linalg.norm(pts - centre, axis=1) * w).sum() / w.sum()))
        if not fixed:
            _, grid = trace_sampling_points(layers, position, hw, zero_offsets=True)
            fixed = float(np.linalg.norm(grid[-1][0] - centre, axis=1).mean())
    return np.array(spreads), fixed


def input_gradients(
    model: nn.Module, image: torch.Tensor, unit: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """|d target / d image| as float[H, W] for two targets: "unit" = the sum over channels of the
    last conv block's output at `unit` (row, col; None = its centre) and "logit" = the predicted
    class's logit. Also returns "pred" (the predicted class, as a 0-d array)."""
    model.eval()
    x = image.detach().clone().requires_grad_(True)
    feats = model.forward_features(x)
    h, w = feats.shape[-2:]
    r, c = unit if unit is not None else ((h - 1) // 2, (w - 1) // 2)
    (g_unit,) = torch.autograd.grad(feats[0, :, r, c].sum(), x)
    x2 = image.detach().clone().requires_grad_(True)
    logits = model(x2)
    pred = int(logits[0].argmax())
    (g_logit,) = torch.autograd.grad(logits[0, pred], x2)
    return {
        "unit": g_unit[0, 0].abs().numpy(),
        "logit": g_logit[0, 0].abs().numpy(),
        "pred": np.array(pred),
    }


# ------------------------------------------------------------------------------------- drawing
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show_image(ax, image: np.ndarray, upscale: int, margin: float = 0) -> None:
    """Draw a uint8 [H, W] image upscaled by `upscale` (pixel centres at (u + 0.5) * upscale),
    with `margin` image pixels of (grey) surroundings."""
    h, w = image.shape
    ax.imshow(image, cmap="gray", extent=(0, w * upscale, h * upscale, 0), interpolation="bicubic")
    m = margin * upscale
    ax.set_xlim(-m, w * upscale + m)
    ax.set_ylim(h * upscale + m, -m)
    ax.set_facecolor("0.35")  # outside the image: grey, so points sampling there stay visible
    ax.set_xticks([])
    ax.set_yticks([])


def _scatter(
    ax, pts: np.ndarray, weights: np.ndarray, upscale: int, color: str, size: float
) -> None:
    alpha = np.clip(weights / max(weights.max(), 1e-12), 0.15, 1.0)
    rgba = np.zeros((len(pts), 4))
    rgba[:, :3] = {"red": (1, 0.1, 0.1), "blue": (0.2, 0.5, 1), "yellow": (1, 0.9, 0.1)}[color]
    rgba[:, 3] = alpha
    ax.scatter((pts[:, 1] + 0.5) * upscale, (pts[:, 0] + 0.5) * upscale, s=size, c=rgba, lw=0)


def plot_sampling(rows: list[dict], path: str, upscale: int = 10, margin: float = 6) -> None:
    """One row per image: the fixed grid of the same layers (regular conv), then the deformable
    points at each depth. Each row dict: {"image": uint8[H, W], "title": str, "unit_xy": (y, x)
    image pixels, "levels": [(points, weights)], "fixed": [(points, weights)]}."""
    plt = _pyplot()
    cols = 1 + len(rows[0]["levels"])
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.7 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        n_layers = len(row["levels"])
        panels = [("regular conv: fixed grid", row["fixed"][-1], "blue")]
        panels += [
            (f"deformable: {len(row['levels'][d][0])} points", row["levels"][d], "red")
            for d in range(n_layers)
        ]
        for c, (title, (pts, wts), color) in enumerate(panels):
            ax = axes[r, c]
            _show_image(ax, row["image"], upscale, margin)
            _scatter(ax, pts, wts, upscale, color, 10 if len(pts) > 100 else 22)
            uy, ux = row["unit_xy"]
            ax.scatter([(ux + 0.5) * upscale], [(uy + 0.5) * upscale], s=60, c="lime", marker="x")
            ax.set_title(title if r == 0 else "", fontsize=8)
            if c == 0:
                ax.set_ylabel(row["title"], fontsize=8)
    fig.suptitle(
        "sampling locations of one output unit (green x); DCNv2: opacity = mask product", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def plot_gradients(rows: list[dict], names: list[str], path: str) -> None:
    """One row per image: the image, then |d unit / d input| and |d logit / d input| of every
    model in `names`. Each row dict: {"image", "title", "grads": {name: input_gradients(...)}}."""
    plt = _pyplot()
    cols = 1 + 2 * len(names)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(row["image"], cmap="gray")
        axes[r, 0].set_title(row["title"], fontsize=7)
        for k, name in enumerate(names):
            g = row["grads"][name]
            for t, target in enumerate(("unit", "logit")):
                ax = axes[r, 1 + 2 * k + t]
                ax.imshow(g[target], cmap="inferno")
                ax.contour(row["image"], levels=[128], colors="cyan", linewidths=0.6)
                label = "centre unit" if target == "unit" else f"logit, pred {int(g['pred'])}"
                ax.set_title(f"{name}: {label}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        "|gradient| of the output w.r.t. the input pixels (cyan: digit outline)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def plot_spread(
    scales: list[float], spreads: dict[str, list[float]], fixed: float, path: str
) -> None:
    """Mean sampling distance vs test scale for each model in `spreads`, fixed grid as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in spreads.items():
        ax.plot(scales, values, "o-", label=name)
    ax.axhline(fixed, color="k", ls="--", lw=1, label="regular conv (fixed grid)")
    ax.set_xlabel("digit scale")
    ax.set_ylabel("mean sampling distance (px)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
