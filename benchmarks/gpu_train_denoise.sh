#!/usr/bin/env bash
# The denoise recipe's GPU run in one call: times the step, sizes the schedule to fit, trains, packages.
# For a machine with PyTorch + CUDA, numpy and scipy (Python 3.12) but no SimpleITK, MONAI or network: first, where
# the v3 bank is, run  scripts/pack_denoise_bank.py RUN_V3/bank_dr.npz .gpucheck/denoise_clean.npz
# (<= 40 MB) and carry .gpucheck/ along (safetensors' wheel in .gpucheck/wheels if that machine lacks it).
#   benchmarks/gpu_train_denoise.sh [OUT_DIR]     (default: $OUT, else benchmarks/results)
# Environment: CTN_TRAIN_MINUTES (training time, default 7), CTN_TRAIN_DEADLINE (epoch seconds: the minutes are capped
# at what is left of it once the bank is made and a step is timed, less 20 s for the package), CTN_CHECK_DEVICE (default cuda),
# CTN_BATCH (default the GPU recipe's 256), CTN_BANK (default .gpucheck/denoise_clean.npz; "stream": the clean scans
# are simulated on the device first, from the procedural phantoms and .gpucheck/v3_lung1.npz's slabs, with
# CTN_V3_PHANTOMS / CTN_V3_SIZE / CTN_V3_SLICES / CTN_V3_LUNG1_SLABS as in gpu_train_v3.sh, the slabs' pack at
# CTN_V3_LUNG1_PACK (default .gpucheck/v3_lung1.npz): no CPU bank to build or
# carry), CTN_RECIPE (denoise, the
# default, denoise-v2: starts from the checkout's ctn-denoise-v1, denoise-v2b: from its ctn-denoise-v2, or denoise-v2c: from its ctn-denoise-v2b). Writes OUT_DIR/<name>-gpu/ (package) and
# OUT_DIR/gpu_train_denoise.json (steps, samples/s, time) and OUT_DIR/log.csv (the loss curve); the CPU recipe's package is not touched. Python: $PYTHON,
# else .venv/bin/python when there, else python3.
set -euo pipefail
OUT_DIR=${1:-${OUT:-}}
[ -n "$OUT_DIR" ] && OUT_DIR=$(mkdir -p "$OUT_DIR" && cd "$OUT_DIR" && pwd)  # relative to where it is called
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-$PWD/benchmarks/results}
export CTN_V3_LUNG1_PACK=${CTN_V3_LUNG1_PACK:-.gpucheck/v3_lung1.npz}
if [ "${CTN_BANK:-}" = stream ] && [ "${CTN_V3_LUNG1_SLABS:-4}" != 0 ] && [ ! -f "$CTN_V3_LUNG1_PACK" ]; then
  echo "CTN_BANK=stream reads the lung1 slabs from $CTN_V3_LUNG1_PACK (scripts/pack_v3_truths.py makes it; carry" \
       ".gpucheck), or set CTN_V3_LUNG1_SLABS=0: the GPU machine has no SimpleITK to read lung1 itself." >&2
  exit 2
fi
if [ -x .venv/bin/python ]; then DEFAULT_PY=.venv/bin/python; else DEFAULT_PY=python3; fi
PY=${PYTHON:-$DEFAULT_PY}
mkdir -p "$OUT_DIR"
if compgen -G ".gpucheck/wheels/*.whl" > /dev/null; then
  SITE=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpucheck/wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# a file, not stdin: a stream bank's phantoms are made in spawned processes, which re-import the main script
cat > "$WORK/gpu_train_denoise.py" <<'PY'
import json, os, time
from pathlib import Path

import torch

from CTNormalizeLib.models import build_model
from CTNormalizeLib.train.denoiser import (GPU_OVERRIDES, RECIPE_OVERRIDES, DenoiseConfig, clean_slices,
                                           make_batch_torch, train_denoiser, train_step)
from CTNormalizeLib.train.run import minutes_before

def clean_bank(out: Path, dev: str):
    """The bank to read and the seconds it took: CTN_BANK, or with CTN_BANK=stream one simulated here."""
    name = os.environ.get("CTN_BANK", ".gpucheck/denoise_clean.npz")
    if name != "stream":
        return Path(name), 0.0
    from CTNormalizeLib.train.dr_stream import StreamSettings, write_clean_bank

    truths = Path(os.environ["CTN_V3_LUNG1_PACK"])
    st = StreamSettings(phantom_seeds=tuple(range(int(os.environ.get("CTN_V3_PHANTOMS", "96")))),
                        lung1_slabs=int(os.environ.get("CTN_V3_LUNG1_SLABS", "4")),
                        phantom_size=int(os.environ.get("CTN_V3_SIZE", "256")),
                        phantom_slices=int(os.environ.get("CTN_V3_SLICES", "48")),
                        lung1_file=str(truths) if truths.is_file() else None)
    t = time.perf_counter()
    path = write_clean_bank(st, dev, Path(os.environ["CTN_WORK"]) / "clean_stream.npz")  # not OUT: hundreds of MB
    return path, time.perf_counter() - t


def main():
    out = Path(os.environ["CTN_OUT_DIR"])
    dev = os.environ.get("CTN_CHECK_DEVICE", "cuda")
    minutes = float(os.environ.get("CTN_TRAIN_MINUTES", "7"))
    bank, bank_s = clean_bank(out, dev)
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
    deadline = os.environ.get("CTN_TRAIN_DEADLINE")  # a lease's end: what the bank and the probe left of it
    minutes = minutes_before(float(deadline) if deadline else None, minutes)
    steps = max(10, int(0.95 * minutes * 60 / per_step))
    del model, opt, vols  # train_denoiser reads the bank itself
    cfg = DenoiseConfig(steps=steps, **over)
    t0 = time.perf_counter()
    run = Path(os.environ["CTN_WORK"]) / "run_denoise_gpu"  # checkpoints stay off what a lease brings back
    pkg = train_denoiser(cfg, bank, run, resume=False, max_seconds=minutes * 60 * 1.1,
                         package_dir=out / f"{cfg.name}-gpu", device=dev)
    (out / "log.csv").write_bytes((run / "log.csv").read_bytes())
    wall = time.perf_counter() - t0
    card = json.loads((pkg / "card.json").read_text())
    res = {"device": dev if on_cpu else f"{dev}: {torch.cuda.get_device_name(torch.device(dev))}", "torch": torch.__version__,
           "batch": cfg.batch, "patch": cfg.patch, "probe_s_per_step": round(per_step, 4),
           "samples_per_s_probe": round(cfg.batch / per_step, 1), "steps_planned": steps,
           "steps_done": card["recipe"]["steps_done"], "train_wall_s": round(wall, 1),
           "samples_seen": card["recipe"]["steps_done"] * cfg.batch, "package": str(pkg),
           "bank": str(bank), "bank_s": round(bank_s, 1), "minutes": round(minutes, 3)}
    (out / "gpu_train_denoise.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == "__main__":  # spawned phantom workers import this file again
    main()
PY
CTN_OUT_DIR="$OUT_DIR" CTN_WORK="$WORK" "$PY" "$WORK/gpu_train_denoise.py"
