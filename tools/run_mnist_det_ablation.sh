#!/usr/bin/env bash
# The DCNv2 ablation on the digit-detection set (docs/mnist_det.md): five configs on one schedule,
# two seeds for the regular config and the full recipe (7 runs), one at a time, one thread each,
# niced, resumable (a run whose metrics.json exists is skipped; an interrupted one is continued
# with --resume). Each run trains, then evaluates on mnist_det_val (bbox and segm AP, small /
# medium / large); tools/summarize_mnist_det.py turns the results into the table.
#
#   tools/run_mnist_det_ablation.sh                 # all 7 runs, ~15 min (full) / ~8 min (regular)
#   RUNS_ONLY="1_regular:0" tools/run_mnist_det_ablation.sh   # just one
#
# Workspaces and logs: work_space/mnist_det/<config>_s<seed>/ (not in git); each run's
# metrics.json and wall time are copied to RESULTS (default docs/results/mnist_det/).
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-work_space/mnist_det}"; RESULTS="${RESULTS:-docs/results/mnist_det}"
PYTHON="${PYTHON:-python}"
RUNS_ONLY="${RUNS_ONLY:-1_regular:0 2_dcnv1:0 3_dcnv2:0 4_dcnv2_mdpool:0 5_full_mimic:0 1_regular:1 5_full_mimic:1}"
mkdir -p "$RUNS" "$RESULTS"

for run in $RUNS_ONLY; do
  cfg="${run%%:*}"; seed="${run#*:}"; name="${cfg}_s$seed"; ws="$RUNS/$name"
  metrics="$ws/inference/mnist_det_val/metrics.json"
  if [ -f "$RESULTS/$name.json" ]; then continue; fi
  resume=""; [ -f "$ws/model/last_checkpoint" ] && resume="--resume"
  mkdir -p "$ws"
  echo "$(date -u +%FT%TZ) start $name" >> "$RUNS/queue.log"
  start=$(date +%s)
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 nice -n 10 "$PYTHON" tools/train.py $resume \
    --config "configs/mnist_det/e2e_mask_rcnn_mnist_det_$cfg.yaml" SEED "$seed" WORKSPACE "$ws" \
    >> "$ws/train.out" 2>&1
  rc=$?
  wall=$(( $(date +%s) - start ))
  echo "$(date -u +%FT%TZ) end $name rc=$rc wall=${wall}s" >> "$RUNS/queue.log"
  if [ "$rc" = 0 ] && [ -f "$metrics" ]; then
    "$PYTHON" - "$metrics" "$RESULTS/$name.json" "$cfg" "$seed" "$wall" "$ws" <<'PY'
import json, sys
metrics, out, cfg, seed, wall, ws = sys.argv[1:]
log = open(f"{ws}/log/log.txt").read() if __import__("os").path.exists(f"{ws}/log/log.txt") else ""
train_line = [l for l in log.splitlines() if "Total training time" in l]
json.dump({"config": cfg, "seed": int(seed), "wall_time_s": int(wall),
           "training_time": train_line[-1].split("time: ")[-1] if train_line else None,
           "metrics": json.load(open(metrics))}, open(out, "w"), indent=1)
PY
  fi
done
