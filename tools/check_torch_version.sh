#!/usr/bin/env bash
# Build the ops against another torch and run the test suite with it, in a venv of its own.
# The project pins torch 2.13, the lent GPU machines run 2.11: there every kernel compiled
# (tools/check_build_torch_headers.sh), yet `import detection` failed on a Python-level
# difference (torch 2.11's register_autocast, 2026-12-04, tests/GPU_RUNS.md). This catches both
# kinds without a GPU: the CPU kernels, the CUDA kernels under the emulation, and the Python side.
#
#   tools/check_torch_version.sh [TORCH [TORCHVISION]]       default 2.11.0 0.26.0
#
# The working tree's tracked files (uncommitted changes included) are copied to $WORK/src, built
# there (objects kept between runs) and tested; the venv ($WORK/venv) is kept too. About 5 GB
# (torch's CUDA build and its nvidia wheels). PYTEST_ARGS picks the tests (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${1:-2.11.0}
TORCHVISION=${2:-0.26.0}
WORK=${WORK:-/tmp/detection-torch-$TORCH}
PY=${PYTHON:-python3}

mkdir -p "$WORK/src"
[ -x "$WORK/venv/bin/python" ] || "$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin/python"
# requirements.txt without its torch pins (comments and blank lines dropped)
mapfile -t REST < <(grep -v -E '^[[:space:]]*(#|$|torch==|torchvision==)' requirements.txt)
"$V" -m pip install -q "torch==$TORCH" "torchvision==$TORCHVISION" "${REST[@]}"

find "$WORK/src" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
git ls-files -z | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$WORK/src"
cd "$WORK/src"
echo "== torch $("$V" -c 'import torch; print(torch.__version__)'), building in $WORK/src"
DETECTION_CUDA_EMULATION=1 MAX_JOBS=${MAX_JOBS:-2} "$V" setup.py build_ext --inplace >build.log 2>&1 \
  || { tail -30 build.log; echo "error: the build against torch $TORCH failed ($WORK/src/build.log)"; exit 1; }
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
OMP_NUM_THREADS=1 "$V" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-}
