#!/usr/bin/env bash
# Line coverage of the CUDA sources under the CUDA emulation (issue #13; not part of `make test`).
# In a copy of the working tree (OUT_DIR/tree, kept between runs so that the build is
# incremental): builds the test-only library detection._C_cuda_emu instrumented for gcov
# (DETECTION_CUDA_COVERAGE=1), runs the emulated CUDA tests (-m cuda_emu), and reports with gcovr
# the line coverage of csrc/**/cuda/* and csrc/roi_common/*.cuh, uncovered lines listed, into
# OUT_DIR/coverage.txt (default build/cuda_emu_coverage).
# Needs gcovr (pip install gcovr) and the product library built in place (detection/_C*.so).
# Usage: tools/cuda_emu_coverage.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=$(realpath -m "${1:-$root/build/cuda_emu_coverage}")
if ! command -v gcovr >/dev/null; then
  echo "error: gcovr not found: pip install gcovr" >&2
  exit 2
fi
libs=(detection/_C.*.so)
if [ ! -e "${libs[0]}" ]; then
  echo "error: detection/_C*.so not found: build it first (python setup.py build_ext --inplace)" >&2
  exit 2
fi
work="$out/tree"
mkdir -p "$work"
# the tracked and the untracked, not ignored files, as they are now (times kept: ninja rebuilds
# only what changed)
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  if [ -e "$f" ]; then cp -p --parents -- "$f" "$work"; fi
done
cp -p "${libs[@]}" "$work/detection/"
cd "$work"
find . -name '*.gcda' -delete  # counts of an earlier run
DETECTION_CUDA_EMULATION=1 DETECTION_CUDA_COVERAGE=1 MAX_JOBS="${MAX_JOBS:-1}" \
  python setup.py -q build_ext --inplace >build.log 2>&1 || { cat build.log >&2; exit 1; }
DETECTION_CUDA_EMULATION=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  python -m pytest tests/layers -q -m cuda_emu -p no:cacheprovider
gcovr --root . --filter 'csrc/.*/cuda/' --filter 'csrc/roi_common/.*\.cuh$' \
  --txt "$out/coverage.txt" --print-summary
cat "$out/coverage.txt"
