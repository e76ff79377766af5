#!/usr/bin/env bash
# Compile every kernel source against another torch's headers without installing that torch:
# the GPU machines run torch 2.11 while this project develops on 2.13. Downloads the wheel
# (no dependencies), unpacks only torch/include, then g++ -fsyntax-only for the .cpp files and a
# full nvcc compile for sm_90 (output discarded) for the .cu files. Exit status 1 if any fails.
#
#   tools/check_build_torch_headers.sh [TORCH_VERSION]        default 2.11.0
set -uo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-2.11.0}
WORK=${WORK:-/tmp/torch-headers-$VERSION}
PY=${PYTHON:-python}
if [ ! -d "$WORK/x/torch/include" ]; then
  mkdir -p "$WORK"
  "$PY" -m pip download "torch==$VERSION" --no-deps -d "$WORK" -q || exit 1
  unzip -q -o "$WORK"/torch-"$VERSION"-*.whl 'torch/include/*' -d "$WORK/x" || exit 1
fi
INC="$WORK/x/torch/include"
PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
SP=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
NV_INC=()
for d in "$SP"/nvidia/*/include; do NV_INC+=(-I"$d"); done
status=0
for f in $(find csrc -name "*.cpp" | sort); do
  # csrc/cuda_emu: the test-only CUDA emulation library (setup.py, DETECTION_CUDA_EMULATION=1)
  emu=()
  case "$f" in csrc/cuda_emu/*) emu=(-DDETECTION_CUDA_EMULATION) ;; esac
  if g++ -std=c++20 -fsyntax-only -fopenmp -O2 "${emu[@]}" -DTORCH_API_INCLUDE_EXTENSION_H \
      -DTORCH_EXTENSION_NAME=_C -Icsrc -I"$INC" -I"$INC/torch/csrc/api/include" -I"$PYINC" "$f"; then
    echo "ok   $f"
  else
    echo "FAIL $f"; status=1
  fi
done
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
for f in $(find csrc -name "*.cu" | sort); do
  if "$NVCC" -DWITH_CUDA -Icsrc "${NV_INC[@]}" -I"$INC" -I"$INC/torch/csrc/api/include" \
      -I"$PYINC" -c "$f" -o /dev/null -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
      -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr \
      --compiler-options '-fPIC' -O3 -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C \
      -gencode=arch=compute_90,code=sm_90 -std=c++20; then
    echo "ok   $f"
  else
    echo "FAIL $f"; status=1
  fi
done
exit $status
