#!/usr/bin/env bash
# The real-MNIST experiment queue of docs/scaled_mnist.md: one run at a time, one thread, niced,
# resumable (a run whose summary in RESULTS is "completed" is skipped). Priority order: the
# scale-1-trained MNISTClassifier (regular, DCNv2 at offset lr factor 1.0 and 0.1; seeds 0-2), then
# ScaledMNISTNet with random-scale training (regular, DCNv1, DCNv2; seeds 0-2).
#
#   tools/run_mnist_queue.sh            # the issue's protocol: 14 and 5 epochs on all 60k digits
#   CLS_EPOCHS=3 CLS_TRAIN=20000 tools/run_mnist_queue.sh   # a shorter schedule (named in results)
# Other knobs: TEST_SIZE (classifier test digits, 10000), SMN_TEST_SIZE, SMN_NETS (order of the
# ScaledMNISTNet variants, "regular dcnv1 dcnv2"), SEEDS ("0 1 2").
#
# Run folders (checkpoints, CSVs) and logs: work_space/mnist_runs/ (not in git). Each finished or
# interrupted run's summary.json is copied to RESULTS (default docs/results/scaled_mnist/).
set -uo pipefail
cd "$(dirname "$0")/.."
CLS_EPOCHS="${CLS_EPOCHS:-14}"; CLS_TRAIN="${CLS_TRAIN:-60000}"
SMN_EPOCHS="${SMN_EPOCHS:-5}"; SMN_TRAIN="${SMN_TRAIN:-60000}"; SMN_TEST_SIZE="${SMN_TEST_SIZE:-10000}"
SMN_NETS="${SMN_NETS:-regular dcnv1 dcnv2}"
SEEDS="${SEEDS:-0 1 2}"
RUNS="${RUNS:-work_space/mnist_runs}"; RESULTS="${RESULTS:-docs/results/scaled_mnist}"
PYTHON="${PYTHON:-python}"; TEST_SIZE="${TEST_SIZE:-10000}"
mkdir -p "$RUNS/logs" "$RESULTS"

jobs=()
for seed in $SEEDS; do
  c="--arch MNISTClassifier --scale-min 1 --scale-max 1 --epochs $CLS_EPOCHS"
  c="$c --train-size $CLS_TRAIN --test-size $TEST_SIZE --seed $seed"
  jobs+=("cls_e${CLS_EPOCHS}_n${CLS_TRAIN}_regular_s$seed|$c --deform False")
  jobs+=("cls_e${CLS_EPOCHS}_n${CLS_TRAIN}_dcnv2_olr1.0_s$seed|$c --deform True --offset-lr-factor 1.0")
  jobs+=("cls_e${CLS_EPOCHS}_n${CLS_TRAIN}_dcnv2_olr0.1_s$seed|$c --deform True --offset-lr-factor 0.1")
done
declare -A NET_ARGS=([regular]="--deform False" [dcnv1]="--deform True --modulation False"
                     [dcnv2]="--deform True --modulation True")
for seed in $SEEDS; do
  c="--arch ScaledMNISTNet --epochs $SMN_EPOCHS --train-size $SMN_TRAIN --seed $seed"
  c="$c --test-size $SMN_TEST_SIZE"
  for net in $SMN_NETS; do
    jobs+=("smn_e${SMN_EPOCHS}_n${SMN_TRAIN}_t${SMN_TEST_SIZE}_${net}_s$seed|$c ${NET_ARGS[$net]}")
  done
done

for job in "${jobs[@]}"; do
  name="${job%%|*}"; args="${job#*|}"
  if grep -qs '"status": "completed"' "$RESULTS/$name.json"; then continue; fi
  echo "$(date -u +%FT%TZ) start $name" >> "$RUNS/logs/queue.log"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 nice -n 10 "$PYTHON" tools/train_scaled_mnist.py $args --data mnist \
    --threads 1 --out "$RUNS/$name" > "$RUNS/logs/$name.log" 2>&1
  rc=$?
  [ -f "$RUNS/$name/summary.json" ] && cp "$RUNS/$name/summary.json" "$RESULTS/$name.json"
  echo "$(date -u +%FT%TZ) end $name rc=$rc" >> "$RUNS/logs/queue.log"
done
