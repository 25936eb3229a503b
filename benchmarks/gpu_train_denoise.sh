#!/usr/bin/env bash
# The denoise recipe's GPU run in one call: times the step, sizes the schedule to fit, trains, packages.
# For a machine with PyTorch + CUDA, numpy and scipy (Python 3.12) but no SimpleITK, MONAI or network: first, where
# the v3 bank is, run  scripts/pack_denoise_bank.py RUN_V3/bank_dr.npz .gpucheck/denoise_clean.npz
# (<= 40 MB) and carry .gpucheck/ along (safetensors' wheel in .gpucheck/wheels if that machine lacks it).
#   benchmarks/gpu_train_denoise.sh [OUT_DIR]     (default: $OUT, else benchmarks/results)
# Environment: CTN_TRAIN_MINUTES (training time, default 7), CTN_CHECK_DEVICE (default cuda),
# CTN_BATCH (default the GPU recipe's 256), CTN_BANK (default .gpucheck/denoise_clean.npz), CTN_RECIPE (denoise, the
# default, denoise-v2: starts from the checkout's ctn-denoise-v1, denoise-v2b: from its ctn-denoise-v2, or denoise-v2c: from its ctn-denoise-v2b). Writes OUT_DIR/<name>-gpu/ (package) and
# OUT_DIR/gpu_train_denoise.json (steps, samples/s, time); the CPU recipe's package is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-benchmarks/results}}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
if compgen -G ".gpucheck/wheels/*.whl" > /dev/null; then
  SITE=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpucheck/wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
CTN_OUT_DIR="$OUT_DIR" "$PY" - <<'PY'
import json, os, time
from pathlib import Path

import torch

from CTNormalizeLib.models import build_model
from CTNormalizeLib.train.denoiser import (GPU_OVERRIDES, RECIPE_OVERRIDES, DenoiseConfig, clean_slices,
                                           make_batch_torch, train_denoiser, train_step)

out = Path(os.environ["CTN_OUT_DIR"])
dev = os.environ.get("CTN_CHECK_DEVICE", "cuda")
minutes = float(os.environ.get("CTN_TRAIN_MINUTES", "7"))
bank = Path(os.environ.get("CTN_BANK", ".gpucheck/denoise_clean.npz"))
recipe = os.environ.get("CTN_RECIPE", "denoise")
over = {k: v for k, v in RECIPE_OVERRIDES[recipe].items() if k != "steps"}  # the schedule is sized below
over.update(GPU_OVERRIDES, batch=int(os.environ.get("CTN_BATCH", GPU_OVERRIDES["batch"])))
probe = DenoiseConfig(**over)
vols = clean_slices(bank)
model = build_model(probe.arch).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
on_cpu = torch.device(dev).type == "cpu"

def step(i):
    train_step(model, opt, make_batch_torch(probe, vols, 10_000_000 + i, dev), dev)

for i in range(3):
    step(i)
if not on_cpu:
    torch.cuda.synchronize()
t = time.perf_counter()
n = 10
for i in range(n):
    step(100 + i)
if not on_cpu:
    torch.cuda.synchronize()
per_step = (time.perf_counter() - t) / n
steps = max(10, int(0.95 * minutes * 60 / per_step))
del model, opt
cfg = DenoiseConfig(steps=steps, **over)
t0 = time.perf_counter()
pkg = train_denoiser(cfg, bank, out / "run_denoise_gpu", resume=False, max_seconds=minutes * 60 * 1.1,
                     package_dir=out / f"{cfg.name}-gpu", device=dev)
wall = time.perf_counter() - t0
card = json.loads((pkg / "card.json").read_text())
res = {"device": dev if on_cpu else f"{dev}: {torch.cuda.get_device_name(torch.device(dev))}", "torch": torch.__version__,
       "batch": cfg.batch, "patch": cfg.patch, "probe_s_per_step": round(per_step, 4),
       "samples_per_s_probe": round(cfg.batch / per_step, 1), "steps_planned": steps,
       "steps_done": card["recipe"]["steps_done"], "train_wall_s": round(wall, 1),
       "samples_seen": card["recipe"]["steps_done"] * cfg.batch, "package": str(pkg)}
(out / "gpu_train_denoise.json").write_text(json.dumps(res, indent=1))
print(json.dumps(res))
PY
