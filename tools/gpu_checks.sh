#!/usr/bin/env bash
# The checks tests/GPU_RUNS.md asks of a GPU machine, as one call that fits a short lease: build
# (unless the library is there), the CUDA tests, compute-sanitizer memcheck / racecheck /
# initcheck, the CUDA benchmarks (each section alone), a profile of the demo model's training
# step and of its dense twin (does the GPU wait for the host?), the demo on the GPU. Every step
# is capped by a shared deadline, so one slow step cannot take the others' time, and its log is
# written as it runs: what finished comes back even if the call is cut. Record the results in
# GPU_RUNS.md.
#
#   tools/gpu_checks.sh [OUT_DIR]        default $OUT (the device tool's folder), else /tmp/gpu_checks
#   DEADLINE=540 STEPS="tests memcheck racecheck initcheck bench_ops bench_determinism
#     bench_memory bench_model profile demo" tools/gpu_checks.sh        (the defaults)
#
# At most 8 files land in OUT_DIR (the device tool brings back no more): steps.txt (the
# environment, each step's start, exit status and last lines), tests.log, memcheck.log,
# racecheck.log, initcheck.log, bench.log (the sections' Markdown tables and the profiles),
# demo.log, build.log.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT_DIR=${1:-${OUT:-/tmp/gpu_checks}}
DEADLINE=${DEADLINE:-540}
STEPS=${STEPS:-"tests memcheck racecheck initcheck bench_ops bench_determinism bench_memory bench_model profile demo"}
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "error: no CUDA GPU visible to $PY's torch: tools/gpu_checks.sh runs on a GPU machine" >&2
  exit 2
fi
mkdir -p "$OUT_DIR"
T0=$(date +%s)
left() { echo $((DEADLINE - ($(date +%s) - T0))); }
cap() { local l; l=$(left); if [ "$1" -lt "$l" ]; then echo "$1"; else echo "$l"; fi; }
mark() { echo "[t=$(($(date +%s) - T0))s] $*" | tee -a "$OUT_DIR/steps.txt"; }
# run STEP_CAP LOG CMD...: the command under `timeout`, its status and the log's tail in steps.txt
run() {
  local c=$1 log=$2
  shift 2
  if [ "$(left)" -le 5 ]; then
    mark "skipped (deadline): $*"
    return
  fi
  mark "start: $*"
  timeout "$(cap "$c")" "$@" >>"$log" 2>&1
  mark "exit $? (124: cut by its cap)"
  tail -3 "$log" >>"$OUT_DIR/steps.txt"
}
has() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import platform, torch, torchvision; print(platform.python_version(), torch.__version__, torchvision.__version__, torch.version.cuda)"
  nvcc --version | tail -1
  compute-sanitizer --version | tail -1
} >>"$OUT_DIR/steps.txt" 2>&1
if ! "$PY" -c "import detection, sys; sys.exit(0 if detection.cuda_compiled() else 1)" 2>/dev/null; then
  run 300 "$OUT_DIR/build.log" env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    MAX_JOBS="${MAX_JOBS:-16}" "$PY" setup.py build_ext --inplace
fi
"$PY" -c "import detection; assert detection.cuda_compiled(); print('cuda_compiled: True')" \
  >>"$OUT_DIR/steps.txt" 2>&1 || { mark "error: no CUDA library (build.log)"; exit 1; }

T="tests/layers tests/modeling tests/structures"
# shellcheck disable=SC2086  # $T is a list of folders
has tests && run 180 "$OUT_DIR/tests.log" "$PY" -m pytest $T -m cuda -rA -v -n 8 -p no:cacheprovider
SAN=(compute-sanitizer --error-exitcode 1)
# shellcheck disable=SC2086
has memcheck && run 150 "$OUT_DIR/memcheck.log" "${SAN[@]}" --tool memcheck \
  "$PY" -m pytest $T -v -m cuda -p no:cacheprovider
has racecheck && run 60 "$OUT_DIR/racecheck.log" "${SAN[@]}" --tool racecheck \
  "$PY" -m pytest tests/layers/test_deterministic.py -v -m cuda -p no:cacheprovider
has initcheck && run 90 "$OUT_DIR/initcheck.log" "${SAN[@]}" --tool initcheck \
  "$PY" -m pytest tests/layers -v -m cuda -k "not compile" -p no:cacheprovider
for s in ops determinism memory model; do
  has "bench_$s" || continue
  rm -rf "/tmp/gpu_checks_bench_$s"  # a warm machine keeps an earlier call's tables: never report those
  case $s in ops) c=60 ;; determinism) c=40 ;; memory) c=30 ;; model) c=150 ;; esac
  run $c "$OUT_DIR/bench.log" "$PY" benchmarks/run.py --sections $s --devices cuda --repeat 3 \
    --out "/tmp/gpu_checks_bench_$s"
  cat "/tmp/gpu_checks_bench_$s/results.md" >>"$OUT_DIR/bench.log" 2>/dev/null
done
# the demo config's step, 4 synthetic images: kernel time against the wall, launches, syncs
for twin in "" --dense; do
  # shellcheck disable=SC2086  # $twin is empty or one flag
  has profile && run 90 "$OUT_DIR/bench.log" "$PY" benchmarks/profile_step.py --device cuda \
    --steps 5 --top 30 $twin
done
has demo && run 480 "$OUT_DIR/demo.log" "$PY" tools/demo.py --workspace /tmp/gpu_checks_demo \
  MODEL.DEVICE cuda
mark end
