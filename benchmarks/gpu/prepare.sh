#!/usr/bin/env bash
# Here, before the GPU calls: cut onnxruntime-gpu into parts small enough for one device call each,
# and copy the published head into the repository (git-ignored) so that it travels.
#   bash benchmarks/gpu/prepare.sh            # then see benchmarks/gpu/README.md for the calls
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
if [ ! -f ".whl/$WHEEL" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d .whl onnxruntime-gpu==1.31.1
fi
rm -rf .whl/parts && mkdir -p .whl/parts
for i in 1 2 3 4 5; do mkdir -p ".whl/parts/$i"; done
# 5 parts of 52 MiB: each call carries one (the limit is 64 MiB a call, the tree included)
split -b 52M -d -a 1 ".whl/$WHEEL" .whl/parts/p
for f in .whl/parts/p*; do n=$(( ${f##*p} + 1 )); mv "$f" ".whl/parts/$n/$WHEEL.part"; done
sha256sum ".whl/$WHEEL" | cut -d' ' -f1 > .whl/parts/1/sha256
rm -rf .carry && mkdir -p .carry && cp -r ../shared/models/ToMMeR-Llama-3.2-1B_L6_R64 .carry/head
ls -l .whl/parts/*/ .carry/head
