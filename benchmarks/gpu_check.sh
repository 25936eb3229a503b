#!/usr/bin/env bash
# All GPU checks of the fast path in one run (<= 4 minutes, or CTN_CHECK_TIMEOUT seconds), one JSON out.
# For a machine with PyTorch + CUDA and Python 3.12 but no SimpleITK, MONAI or finufft, and no
# network: run benchmarks/pack_gpu_check.sh where there is network first, carry .gpucheck/ along.
#   benchmarks/gpu_check.sh [OUT_DIR]      (default: $OUT, else benchmarks/results)
# What it measures (benchmarks/speed.py --device cuda): the whole `ctnormalize normalize` process
# on the 512x512x300 chest NRRD, run_model in memory (stages, peak GPU memory), an untrained network
# of the v3 architecture, the S0 generator's throughput ratio, fp16/bf16 against fp32.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-benchmarks/results}}
PY=${PYTHON:-python3}
DEVICE=${CTN_CHECK_DEVICE:-cuda}
mkdir -p "$OUT_DIR"
SITE=$(mktemp -d)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpucheck/wheels/*.whl
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" - <<'PY'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
missing = []
for m in ("SimpleITK", "monai", "finufft", "nrrd"):
    try:
        importlib.import_module(m)
    except ImportError:
        missing.append(m)
print("not importable here:", missing)
PY
timeout "${CTN_CHECK_TIMEOUT:-235}" "$PY" benchmarks/speed.py --device "$DEVICE" --input .gpucheck/lung1_int16.npz \
    --child-timeout 120 --out "$OUT_DIR/gpu_check.json" ${CTN_CHECK_ARGS:-}
echo "wrote $OUT_DIR/gpu_check.json"
