#!/usr/bin/env bash
# Here, before the GPU calls: onnxruntime-gpu trimmed to sm_90 (H100/H200), xz-compressed, in two parts,
# one per device call (benchmarks/gpu/README.md). .whl/ is git-ignored; the published head travels
# with the tree (tests/data/heads, tracked), so nothing else is carried.
#   bash benchmarks/gpu/prepare.sh          # .whl/ortgpu/1 and .whl/ortgpu/2, about 29 MiB each
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
# The gpu extra admits onnxruntime-gpu >= 1.26.0; the device carries 1.31.1, the build for CUDA 13,
# the CUDA of the machine's torch (2.11+cu130), whose nvidia packages provide cuBLAS, cuDNN and the runtime.
VERSION=${ORT_GPU_VERSION:-1.31.1}
DL=$(mktemp -d /tmp/ortgpu.XXXXXX)
trap 'rm -rf "$DL"' EXIT  # the wheel is 244 MiB: never left behind
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d "$DL" "onnxruntime-gpu==$VERSION"
rm -rf .whl/ortgpu && mkdir -p .whl/ortgpu
python3 benchmarks/gpu/trim_wheel.py build "$DL"/onnxruntime_gpu-*.whl --out .whl/ortgpu --parts 2 --part-mib 56
ls -l .whl/ortgpu/*/
du -sb .whl/ortgpu/1 .whl/ortgpu/2
