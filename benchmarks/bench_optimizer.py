"""The optimizer's share of a training step: torch's default per-parameter loop against the fused
kernels that `detection.solver.build_optimizer` now uses, on the shapes demo model (one parameter
group per parameter, as `get_param_groups` makes them).

Rows: SGD and AdamW. Columns: the best time of one `optimizer.step()` with each implementation
(random gradients in place), their ratio, and the best time of a whole training step (forward,
backward, update on 4 synthetic images of the config's size) with each. Every figure of a row is
measured in the same process, the two implementations alternated round by round.

    python benchmarks/bench_optimizer.py [--rounds 5] [--repeat 20] [--config CONFIG]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_ops  # noqa: E402
import run  # noqa: E402

CONFIG_10MIN = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes_10min.yaml")


def _optimizers(cfg, model, name: str) -> dict[str, torch.optim.Optimizer]:
    from detection.solver import build_optimizer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.OPTIMIZER = name
    fused = build_optimizer(cfg, model)
    default = build_optimizer(cfg, model)
    for group in default.param_groups:
        group["fused"] = None  # torch's default loop over the same groups
    return {"default loop": default, "fused": fused}


def measure(config: str, rounds: int, repeat: int) -> list[dict]:
    from detection.modeling import build_detection_model

    cfg = run._model_cfg(config, False, "cpu", None)
    torch.manual_seed(0)
    model = build_detection_model(cfg).train()
    images, targets = run._batch(cfg, 4, "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for name in ("SGD", "AdamW"):
        opts = _optimizers(cfg, model, name)
        best = {(kind, what): float("inf") for kind in opts for what in ("step", "train")}
        for _ in range(rounds):
            for kind, opt in opts.items():

                def update(opt=opt):
                    opt.step()

                def train_step(opt=opt):
                    losses = model(images, targets)
                    opt.zero_grad()
                    sum(losses.values()).backward()
                    opt.step()

                for p in params:
                    p.grad = torch.randn_like(p) * 1e-3
                t = bench_ops.time_ms(update, "cpu", repeat)
                best[kind, "step"] = min(best[kind, "step"], t)
                t = bench_ops.time_ms(train_step, "cpu", max(repeat // 10, 2))
                best[kind, "train"] = min(best[kind, "train"], t)
        row = {"optimizer": name, "parameters": len(params)}
        for what in ("step", "train"):
            for kind in opts:
                row[f"{what}_ms {kind}"] = best[kind, what]
            row[f"{what} fused/default"] = best["fused", what] / best["default loop", what]
        rows.append(row)
        print(bench_ops._format_table([row], markdown=False), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=CONFIG_10MIN)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    print(run.environment())
    rows = measure(a.config, a.rounds, a.repeat)
    print()
    print(bench_ops._format_table(rows, markdown=True))


if __name__ == "__main__":
    main()
