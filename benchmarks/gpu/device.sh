#!/usr/bin/env bash
# On the GPU machine (the device tool runs this in the repository's copy); benchmarks/gpu/README.md:
#   bash benchmarks/gpu/device.sh receive 1 prepare [ARGS]   # call 1: keep part 1; env, backbone, corpus, fp32
#   bash benchmarks/gpu/device.sh receive 2 device [ARGS]    # call 2: keep part 2, install onnxruntime-gpu, PLAN
#   bash benchmarks/gpu/device.sh STAGE [ARGS]               # env | prepare | device (a rerun on a warm machine)
# ARGS go to tommer.benchmarks.gpu_session (--budget-s, --tokens). The parts and the work folder live
# in /tmp/tommer-gpu, outside the repository copy: they stay while the machine is warm (30 s after a
# call), so the calls must follow each other at once. Results and logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
STORE=/tmp/tommer-gpu
OUT=${OUT:-/tmp/out}
mkdir -p "$STORE/parts" "$OUT"
T0=$(date +%s)
if [ "${1:-}" = receive ]; then
  rm -rf "$STORE/parts/$2" && cp -r ".whl/ortgpu/$2" "$STORE/parts/$2" || exit 4
  ls -l "$STORE/parts"/*
  shift 2
fi
STAGE=${1:-device}
shift || true
if [ ! -d /tmp/tommer-site/tommer ]; then
  # the package as installed (package/ is tommer, runtime/ tommer.runtime, ...), without a build
  mkdir -p /tmp/tommer-site/tommer
  for f in package/*; do ln -sf "$PWD/$f" /tmp/tommer-site/tommer/; done
  for d in runtime exporter benchmarks; do ln -sfn "$PWD/$d" "/tmp/tommer-site/tommer/$d"; done
fi
PYPATH=/tmp/tommer-site
if [ "$STAGE" != prepare ] && [ "$STAGE" != env ]; then
  if [ ! -d /tmp/site/onnxruntime ]; then
    WHEEL=$(ls "$STORE/parts/1"/*.xz.part | head -1 | xargs basename | sed 's/\.xz\.part$//')
    python3 benchmarks/gpu/trim_wheel.py join "$STORE/parts" --out "/tmp/$WHEEL" || exit 4
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "/tmp/$WHEEL" || exit 4
    rm -f "/tmp/$WHEEL"
  fi
  PYPATH=/tmp/site:$PYPATH  # onnxruntime-gpu before the image's CPU onnxruntime (both are the module onnxruntime)
  # cuBLAS, cuDNN and the CUDA runtime of torch's nvidia packages, for onnxruntime's CUDA provider
  NV=$(python3 -c "import nvidia, os; print(':'.join(sorted({r for p in nvidia.__path__ for r, d, f in os.walk(p) if any(x.endswith('.so') or '.so.' in x for x in f)})))")
  export LD_LIBRARY_PATH="$NV:${LD_LIBRARY_PATH:-}"
fi
export PYTHONPATH=$PYPATH
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.__file__, o.get_available_providers())"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
echo "device.sh: ready after $(( $(date +%s) - T0 )) s"
python3 -m tommer.benchmarks.gpu_session --stage "$STAGE" --work "$STORE/work" --out "$OUT" "$@" 2>&1 | tee "$OUT/log-$STAGE.txt"
STATUS=${PIPESTATUS[0]}
echo "device.sh: $STAGE exit $STATUS after $(( $(date +%s) - T0 )) s"
exit "$STATUS"
