#!/usr/bin/env bash
# Build the ops library with AddressSanitizer in a scratch git worktree of HEAD and run the CPU op
# tests under it. Never touches the library of the working tree it is started from.
#
#   tools/asan_op_tests.sh [pytest args...]        default: tests/layers
#   ASAN_DIR=/tmp/asan KEEP=1 tools/asan_op_tests.sh tests/layers/test_ops_properties.py
#
# ASAN_DIR (default /tmp/asan) is removed and recreated; KEEP=1 keeps it afterwards (to rerun
# pytest there without rebuilding). Exit status: pytest's; ASan aborts a test process on the
# first bad access and prints the report (halt_on_error=1), which fails the run.
set -euo pipefail

REPO=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
ASAN_DIR=${ASAN_DIR:-/tmp/asan}
PYTHON=${PYTHON:-python}
if [ "$#" -eq 0 ]; then set -- tests/layers; fi

cleanup() {
  if [ "${KEEP:-0}" != "1" ]; then
    git -C "$REPO" worktree remove --force "$ASAN_DIR" 2>/dev/null || rm -rf "$ASAN_DIR"
    git -C "$REPO" worktree prune
  fi
}

git -C "$REPO" worktree remove --force "$ASAN_DIR" 2>/dev/null || rm -rf "$ASAN_DIR"
git -C "$REPO" worktree prune
git -C "$REPO" worktree add --detach "$ASAN_DIR" HEAD >/dev/null
trap cleanup EXIT

cd "$ASAN_DIR"
# CPU kernels only (FORCE_CUDA unset and, on a GPU machine, CUDA_VISIBLE_DEVICES hidden from the
# build): ASan instruments host code.
echo "asan: building detection._C with -fsanitize=address in $ASAN_DIR" >&2
CUDA_VISIBLE_DEVICES="" FORCE_CUDA=0 \
  CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" \
  LDFLAGS="-fsanitize=address" \
  MAX_JOBS=${MAX_JOBS:-2} \
  "$PYTHON" setup.py build_ext --inplace >"$ASAN_DIR/asan_build.log" 2>&1 ||
  { tail -40 "$ASAN_DIR/asan_build.log" >&2; exit 1; }

# libstdc++ is preloaded with libasan: otherwise ASan's __cxa_throw interceptor finds no real
# __cxa_throw (libstdc++ arrives later through dlopen) and aborts at the first C++ exception.
PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
echo "asan: LD_PRELOAD=\"$PRELOAD\" python -m pytest $*" >&2
LD_PRELOAD="$PRELOAD" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0" \
  OMP_NUM_THREADS=1 \
  CUDA_VISIBLE_DEVICES="" \
  "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
