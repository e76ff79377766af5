#!/usr/bin/env python
"""The demo behind `make demo`: shapes data -> CPU training -> COCO evaluation -> drawn
detections -> loss curves.

    python tools/demo.py            # the full demo (configs/shapes/e2e_deformconv_mask_rcnn_shapes.yaml)
    python tools/demo.py --quick    # a 1-2 minute smoke version (tiny data, a few iterations)
    python tools/demo.py --config configs/shapes/e2e_deformconv_mask_rcnn_shapes_10min.yaml --procs 2
                                    # the 10-minute schedule, as two training processes of
                                    # one thread each

Each step runs the real tool (tools/train.py, test.py, infer.py, plot_curves.py) in a
subprocess; everything lands under --workspace (default work_space/demo, or work_space/demo_quick).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this tree first

from detection.utils import cli  # noqa: E402

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes.yaml")
TARGET_AP = 0.50
TINY_CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes_tiny.yaml")
# The smoke version: the tiny config (a narrow copy of the network on small images), a tiny
# shapes set of its own and a few iterations.
QUICK_OVERRIDES = [
    "DATASETS.SHAPES.NUM_TRAIN",
    "32",
    "DATASETS.SHAPES.NUM_VAL",
    "8",
    "SOLVER.MAX_ITER",
    "40",
    "SOLVER.STEPS",
    "(30,)",
    "SOLVER.WARMUP_ITERS",
    "5",
    "SOLVER.CHECKPOINT_PERIOD",
    "20",
    "SOLVER.LOG_PERIOD",
    "5",
    "TEST.IMS_PER_BATCH",
    "4",
    "TEST.SCORE_THRESHOLD_VIS",
    "0.1",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke version (about 1-2 minutes)"
    )
    parser.add_argument(
        "--config",
        default="",
        help="training config (default: the shapes demo config; with --quick its tiny copy)",
    )
    parser.add_argument(
        "--workspace", default="", help="output folder (default work_space/demo[_quick])"
    )
    parser.add_argument(
        "--num-infer", type=int, default=4, help="validation images drawn by infer.py"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads per tool (OMP_NUM_THREADS); 0 (default): torch's default, one per "
        "core. The tools set OMP_WAIT_POLICY=PASSIVE, so that all cores stay fast when other "
        "work shares the machine (benchmarks/RESULTS.md, Threads)",
    )
    parser.add_argument(
        "--procs",
        type=int,
        default=1,
        help="training processes: N > 1 trains data-parallel under torchrun (gloo on the CPU), "
        "SOLVER.IMS_PER_BATCH split between them, each with --threads threads (0: the cores "
        "divided by N). On the 2-core VMs, two processes of one thread each took 0.48-0.95x "
        "(2026-12-03) and 0.76-1.12x (2026-12-02) the time per iteration of one process of two "
        "threads (benchmarks/RESULTS.md, 'The 10-minute demo', second and eighth rounds)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train from scratch, deleting the workspace's earlier checkpoints (default: continue "
        "the earlier demo run, or reuse it when it is finished)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.procs < 1:
        parser.error(f"--procs must be >= 1, got {args.procs}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    return args


def _run(step: str, cmd: list[str], threads: int = 0) -> float:
    """Run one tool, streaming its output; returns its wall time in seconds."""
    print(f"\n=== {step}: {' '.join(cmd)}", flush=True)
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    status = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if status != 0:
        raise cli.UsageError(f"the {step} step failed (exit status {status}); its message is above")
    elapsed = time.perf_counter() - start
    print(f"=== {step} done in {elapsed:.1f} s", flush=True)
    return elapsed


def ensure_shapes(cfg) -> list[str]:
    """Generate the shapes set through the data pipeline if it is missing; returns the
    paths of the images of the first test set."""
    from detection.data.build import resolve_dataset

    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        resolve_dataset(name, cfg)
    args = resolve_dataset(cfg.DATASETS.TEST[0], cfg)["args"]
    with open(args["ann_file"]) as f:
        images = json.load(f)["images"]
    return [
        os.path.join(args["root"], im["file_name"])
        for im in sorted(images, key=lambda im: im["id"])
    ]


@cli.cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    from detection.engine.setup import load_config

    args.config = args.config or (TINY_CONFIG if args.quick else DEFAULT_CONFIG)
    ws = args.workspace or os.path.join(ROOT, "work_space", "demo_quick" if args.quick else "demo")
    overrides = ["WORKSPACE", ws, "MODEL.DEVICE", "cpu"]
    if args.quick:
        overrides += QUICK_OVERRIDES + ["DATASETS.ROOT", os.path.join(ws, "datasets")]
    overrides += args.opts
    cfg = load_config(args.config, overrides)
    if cfg.SOLVER.IMS_PER_BATCH % args.procs:
        raise cli.UsageError(
            f"--procs {args.procs} must divide SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}): "
            f"each training process takes an equal share of the batch"
        )
    py = sys.executable
    tools = os.path.join(ROOT, "tools")
    times = {}
    threads = args.threads

    print(f"=== shapes data under {os.path.abspath(cfg.DATASETS.ROOT)}", flush=True)
    start = time.perf_counter()
    val_images = ensure_shapes(cfg)
    times["data"] = time.perf_counter() - start

    final = os.path.join(ws, "final", "model_final.pth")
    # Run again, the demo continues its own run (or finds it finished); --overwrite starts over.
    resume = ["--overwrite"] if args.overwrite else ["--resume"]
    train = [os.path.join(tools, "train.py"), "--config", args.config, *resume, *overrides]
    train_threads = threads
    if args.procs > 1:
        # torchrun's standalone rendezvous: one node, a free local port
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.procs}"]
        train = launch + train
        train_threads = threads or max(1, (os.cpu_count() or 1) // args.procs)
    times["train"] = _run("train", [py, *train], train_threads)
    times["test"] = _run(
        "test",
        [py, os.path.join(tools, "test.py"), "--config", args.config, "--ckpt", final, *overrides],
        threads,
    )
    infer_in = os.path.join(ws, "infer_input")
    os.makedirs(infer_in, exist_ok=True)
    for path in val_images[: args.num_infer]:
        link = os.path.join(infer_in, os.path.basename(path))
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(path), link)
    infer_out = os.path.join(ws, "infer")
    times["infer"] = _run(
        "infer",
        [
            py,
            os.path.join(tools, "infer.py"),
            "--config",
            args.config,
            "--ckpt",
            final,
            "--input",
            infer_in,
            "--output",
            infer_out,
            *overrides,
        ],
        threads,
    )
    curves = os.path.join(ws, "loss_curves.png")
    times["plot"] = _run(
        "plot",
        [
            py,
            os.path.join(tools, "plot_curves.py"),
            "--metrics",
            os.path.join(ws, "log", "metrics.jsonl"),
            "--output",
            curves,
        ],
    )
    return report(cfg, ws, final, infer_out, curves, times, args.quick)


def report(cfg, ws, final, infer_out, curves, times, quick) -> int:
    dataset = cfg.DATASETS.TEST[0]
    metrics_path = os.path.join(ws, "inference", dataset, "metrics.json")
    with open(metrics_path) as f:
        metrics = json.load(f)
    print("\n" + "=" * 72)
    print(f"Demo {'(quick) ' if quick else ''}finished. Outputs:")
    print(f"  checkpoints     {os.path.join(ws, 'model')}  (final: {final})")
    print(
        f"  logs            {os.path.join(ws, 'log')}  (log.txt, metrics.jsonl, TensorBoard events)"
    )
    print(
        f"  evaluation      {os.path.dirname(metrics_path)}  (bbox.json, segm.json, metrics.json)"
    )
    print(f"  drawn images    {infer_out}  (+ detections.json)")
    print(f"  loss curves     {curves}")
    print("Times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    for iou_type, values in metrics.items():
        print(f"  {dataset} {iou_type:4s}: " + "  ".join(f"{k} {v:.3f}" for k, v in values.items()))
    if not quick:
        ok = all(metrics.get(t, {}).get("AP", 0.0) >= TARGET_AP for t in ("bbox", "segm"))
        print(
            f"Target bbox AP >= {TARGET_AP} and segm AP >= {TARGET_AP}: {'met' if ok else 'NOT met'}"
        )
    print("=" * 72)
    return 0


if __name__ == "__main__":
    sys.exit(main())
