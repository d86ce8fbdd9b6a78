#!/usr/bin/env bash
# On the GPU machine (the device tool runs this in the repository's copy):
#   bash benchmarks/gpu/device.sh receive N      # calls 1..5: keep part N of onnxruntime-gpu
#   bash benchmarks/gpu/device.sh STAGE [ARGS]   # env | export | bench-onnx | bench-torch | all
# Parts and the work folder are git-ignored: they stay on the machine while it is warm (30 s
# after a call), so the calls must follow each other quickly. Results go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
STORE=/tmp/tommer-gpu   # outside the repo copy: survives while the machine is warm
mkdir -p "$STORE"
if [ "${1:-}" = receive ]; then
  cp ".whl/parts/$2/$WHEEL.part" "$STORE/part$2" && ls -l "$STORE"
  [ -f .whl/parts/1/sha256 ] && cp .whl/parts/1/sha256 "$STORE/sha256"
  exit 0
fi
if [ ! -d /tmp/site/onnxruntime ]; then
  cat "$STORE"/part1 "$STORE"/part2 "$STORE"/part3 "$STORE"/part4 "$STORE"/part5 > "/tmp/$WHEEL" || exit 3
  echo "$(cat "$STORE/sha256")  /tmp/$WHEEL" | sha256sum -c - || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "/tmp/$WHEEL" || exit 3
fi
if [ ! -d /tmp/tommer-site/tommer ]; then
  # the package as installed (package/ is tommer, runtime/ tommer.runtime, ...), without a build
  mkdir -p /tmp/tommer-site/tommer
  for f in package/*; do ln -sf "$PWD/$f" /tmp/tommer-site/tommer/; done
  for d in runtime exporter benchmarks; do ln -sfn "$PWD/$d" "/tmp/tommer-site/tommer/$d"; done
fi
export PYTHONPATH=/tmp/site:/tmp/tommer-site
# cuBLAS, cuDNN and the CUDA runtime of torch's nvidia packages, for onnxruntime's CUDA provider
NV=$(python3 -c "import nvidia, os; print(':'.join(sorted({r for p in nvidia.__path__ for r, d, f in os.walk(p) if any(x.endswith('.so') or '.so.' in x for x in f)})))")
export LD_LIBRARY_PATH="$NV:${LD_LIBRARY_PATH:-}"
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 -m tommer.benchmarks.gpu_session --stage "$1" --work "$STORE/work" --head .carry/head --out "${OUT:-/tmp/out}" "${@:2}" 2>&1 | tee "${OUT:-/tmp/out}/log-$1.txt"
