#!/usr/bin/env bash
# The DCNv2 ablation on the digit-detection set (docs/mnist_det.md): five configs on one schedule,
# two seeds for the regular config and the full recipe (7 runs), one thread each, niced,
# resumable (a run whose result file exists is skipped; an interrupted one is continued with
# --resume). Each run trains (tools/train.py), then evaluates on mnist_det_val (tools/test.py:
# bbox and segm AP, small / medium / large); tools/summarize_mnist_det.py makes the table.
#
#   tools/run_mnist_det_ablation.sh                 # one worker: the 7 runs in RUNS_ONLY order
#   tools/run_mnist_det_ablation.sh & tools/run_mnist_det_ablation.sh &   # two workers
#   RUNS_ONLY="1_regular:0" tools/run_mnist_det_ablation.sh   # just one
#   OPTS="SOLVER.MAX_ITER 2000 SOLVER.STEPS (1500,1800)" RUNS=work_space/mnist_det_2000it \
#     RESULTS=docs/results/mnist_det_2000it tools/run_mnist_det_ablation.sh   # another schedule
#
# OPTS (config overrides, KEY VALUE pairs without spaces inside a value) go to both train.py and
# test.py and are recorded in the result file.
# Workers share the queue: each takes the next run in RUNS_ONLY order that no other worker holds
# (a flock on the run's folder, released when its process ends, even by a kill), so N workers run
# N runs at once. Workspaces and logs: work_space/mnist_det/<config>_s<seed>/ (not in git), with
# load.log (/proc/loadavg every minute while the run trains and evaluates); queue.log records
# each start and end. The metrics, wall times and mean load go to RESULTS/<config>_s<seed>.json
# (default docs/results/mnist_det/).
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-work_space/mnist_det}"; RESULTS="${RESULTS:-docs/results/mnist_det}"
PYTHON="${PYTHON:-python}"; NICE="${NICE:-19}"; OPTS="${OPTS:-}"
RUNS_ONLY="${RUNS_ONLY:-1_regular:0 5_full_mimic:0 3_dcnv2:0 4_dcnv2_mdpool:0 2_dcnv1:0 1_regular:1 5_full_mimic:1}"
mkdir -p "$RUNS" "$RESULTS"
sampler=""
trap '[ -z "$sampler" ] || kill "$sampler" 2>/dev/null' EXIT

log() { echo "$(date -u +%FT%TZ) $*" >> "$RUNS/queue.log"; }

for run in $RUNS_ONLY; do
  cfg="${run%%:*}"; seed="${run#*:}"; name="${cfg}_s$seed"; ws="$RUNS/$name"
  config="configs/mnist_det/e2e_mask_rcnn_mnist_det_$cfg.yaml"
  [ -f "$RESULTS/$name.json" ] && continue
  mkdir -p "$ws"
  exec 9>"$ws/.lock"
  if ! flock -n 9 || [ -f "$RESULTS/$name.json" ]; then exec 9>&-; continue; fi  # taken or done
  resume=""; [ -f "$ws/model/last_checkpoint" ] && resume="--resume"
  log "start $name $resume (worker $$)"
  ( while :; do echo "$(date +%s) $(cut -d' ' -f1-3 /proc/loadavg)" >> "$ws/load.log"; sleep 60; done ) 9>&- &
  sampler=$!
  start=$(date +%s)
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 nice -n "$NICE" "$PYTHON" tools/train.py $resume --config "$config" \
    SEED "$seed" WORKSPACE "$ws" $OPTS >> "$ws/train.out" 2>&1
  rc=$?
  trained=$(date +%s)
  if [ "$rc" = 0 ]; then
    OMP_NUM_THREADS=1 nice -n "$NICE" "$PYTHON" tools/test.py --no-progress --config "$config" \
      SEED "$seed" WORKSPACE "$ws" $OPTS >> "$ws/test.out" 2>&1
    rc=$?
  fi
  end=$(date +%s)
  kill "$sampler" 2>/dev/null; sampler=""
  log "end $name rc=$rc train=$((trained - start))s eval=$((end - trained))s"
  metrics="$ws/inference/mnist_det_val/metrics.json"
  if [ "$rc" = 0 ] && [ -f "$metrics" ]; then
    "$PYTHON" - "$metrics" "$RESULTS/$name.json" "$cfg" "$seed" "$start" "$trained" "$end" \
      "$ws" "$resume" "$config" "$OPTS" <<'PY'
import json, os, sys
metrics, out, cfg, seed, start, trained, end, ws, resume, config, opts = sys.argv[1:]
start, trained, end = int(start), int(trained), int(end)
loads = []
if os.path.exists(f"{ws}/load.log"):
    for line in open(f"{ws}/load.log"):
        t, l1, *_ = line.split()
        if start <= int(t) <= end:
            loads.append(float(l1))
log = open(f"{ws}/log/log.txt").read() if os.path.exists(f"{ws}/log/log.txt") else ""
train_line = [l for l in log.splitlines() if "Total training time" in l]
json.dump({
    "config": cfg, "seed": int(seed), "config_file": config, "opts": opts.split(),
    "wall_time_s": end - start, "train_wall_s": trained - start, "eval_wall_s": end - trained,
    "resumed": bool(resume),  # wall times then cover only the last (resumed) part
    "training_time": train_line[-1].split("time: ")[-1] if train_line else None,
    "load_1min_mean": round(sum(loads) / len(loads), 2) if loads else None,
    "load_1min_max": max(loads) if loads else None,
    "metrics": json.load(open(metrics)),
}, open(out, "w"), indent=1)
PY
  fi
  exec 9>&-
done
