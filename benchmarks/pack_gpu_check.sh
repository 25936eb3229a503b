#!/usr/bin/env bash
# Prepares .gpucheck/ (ignored by git) for benchmarks/gpu_check.sh on a machine without network:
# the benchmark chest (lung1 as a compressed int16 .npz, ~12 MB) and the wheels that machine lacks
# (MONAI for tiled and 3D inference, pynrrd for NRRD without SimpleITK, safetensors), ~3 MB; with
# CTN_V3_BANK=RUN_V3/bank_dr.npz also the denoise recipe's clean scans (~40 MB); v3's lung1 slabs (~3 MB). Needs network and
# the pyradiomics cache here. Usage: [CTN_V3_BANK=...] benchmarks/pack_gpu_check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
mkdir -p .gpucheck/wheels
PYTHONPATH=$PWD "$PY" benchmarks/chest.py .gpucheck/lung1_int16.npz
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .gpucheck/wheels "monai==1.6.1" "pynrrd==1.1.3" "safetensors==0.8.0"
# v3's GPU recipe (benchmarks/gpu_train_v3.sh) reads the lung1 slabs packed (~3 MB)
PYTHONPATH=$PWD "$PY" scripts/pack_v3_truths.py .gpucheck/v3_lung1.npz
# the denoise recipe's GPU run (benchmarks/gpu_train_denoise.sh) needs the v3 bank's noise-free scans
if [ -f "${CTN_V3_BANK:-}" ]; then
  "$PY" scripts/pack_denoise_bank.py "$CTN_V3_BANK" .gpucheck/denoise_clean.npz --budget-mb 40
fi
du -sh .gpucheck
