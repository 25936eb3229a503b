#!/usr/bin/env bash
# Prepares .gpucheck/ (ignored by git) for benchmarks/gpu_check.sh on a machine without network:
# the benchmark chest (lung1 as a compressed int16 .npz, ~12 MB) and the wheels that machine lacks
# (MONAI for tiled and 3D inference, pynrrd for NRRD without SimpleITK), ~2 MB. Needs network and
# the pyradiomics cache here. Usage: benchmarks/pack_gpu_check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
mkdir -p .gpucheck/wheels
PYTHONPATH=$PWD "$PY" benchmarks/chest.py .gpucheck/lung1_int16.npz
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .gpucheck/wheels "monai==1.6.1" "pynrrd==1.1.3"
du -sh .gpucheck
