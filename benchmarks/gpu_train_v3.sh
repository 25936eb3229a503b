#!/usr/bin/env bash
# v3's GPU recipe in one call: pairs simulated on the GPU while it trains, schedule sized to the time, package.
# For a machine with PyTorch + CUDA, numpy and scipy (Python 3.12) but no SimpleITK, MONAI or network: first, here,
#   .venv/bin/python scripts/pack_v3_truths.py .gpucheck/v3_lung1.npz      (~3 MB; safetensors' wheel in
#   .gpucheck/wheels if that machine lacks it: benchmarks/pack_gpu_check.sh fetches it) and carry .gpucheck/.
#   benchmarks/gpu_train_v3.sh [OUT_DIR]     (default: $OUT, else benchmarks/results; Python: $PYTHON, else
#   .venv/bin/python when there, else python3)
# Environment: CTN_TRAIN_MINUTES (training time, default 6), CTN_CHECK_DEVICE (default cuda), CTN_V3_PHANTOMS
# (procedural phantoms, default 96), CTN_V3_SIZE (phantom pixels, default 256), CTN_V3_SLICES (default 48),
# CTN_V3_POOL (cases held at once, default 192), CTN_V3_WORKERS (simulation processes, default cores / 3, 1 to 6),
# CTN_V3_LUNG1_SLABS (default 4; read from .gpucheck/v3_lung1.npz when there, else from the pyradiomics cache),
# CTN_V3_BATCH and CTN_V3_PATCH (default: the recipe's 256 and 64; smaller for a CPU try of the script),
# CTN_V3_WIDTH and CTN_V3_BLOCKS (the network's channels and blocks; default v3's 48 and 6),
# CTN_TRAIN_DEADLINE (epoch seconds, e.g. $(( $(date +%s) + 420 ))): the training minutes are capped at what is left
# of it once the truths are made and a step is timed, so a lease's setup time cannot push the run past its end.
# Writes OUT_DIR/ctn-conditioned-v3-gpu/ (package; -wWIDTHbBLOCKS appended for another size) and
# OUT_DIR/gpu_train_v3.json; the shipped v3 is not touched.
# A CPU try (minutes, not a model): CTN_CHECK_DEVICE=cpu CTN_TRAIN_MINUTES=0.5 CTN_V3_PHANTOMS=2 CTN_V3_SIZE=64
#   CTN_V3_SLICES=16 CTN_V3_POOL=8 CTN_V3_LUNG1_SLABS=0 CTN_V3_BATCH=16 benchmarks/gpu_train_v3.sh /tmp/v3try
set -euo pipefail
OUT_DIR=${1:-${OUT:-}}
[ -n "$OUT_DIR" ] && OUT_DIR=$(mkdir -p "$OUT_DIR" && cd "$OUT_DIR" && pwd)  # relative to where it is called
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-$PWD/benchmarks/results}
if [ -x .venv/bin/python ]; then DEFAULT_PY=.venv/bin/python; else DEFAULT_PY=python3; fi
PY=${PYTHON:-$DEFAULT_PY}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if compgen -G ".gpucheck/wheels/*.whl" > /dev/null; then
  SITE=$WORK/site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpucheck/wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# a file, not stdin: the phantoms are made in spawned processes, which re-import the main script
SCRIPT=$WORK/gpu_train_v3.py
cat > "$SCRIPT" <<'PY'
import json, logging, os, time
from pathlib import Path

import torch

from CTNormalizeLib.train.dr_stream import StreamSettings
from CTNormalizeLib.train.run import _device, _train_v3_stream


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(os.environ["CTN_OUT_DIR"])
    dev = _device(os.environ.get("CTN_CHECK_DEVICE", "cuda"))
    minutes = float(os.environ.get("CTN_TRAIN_MINUTES", "6"))
    truths = Path(".gpucheck/v3_lung1.npz")
    st = StreamSettings(phantom_seeds=tuple(range(int(os.environ.get("CTN_V3_PHANTOMS", "96")))),
                        lung1_slabs=int(os.environ.get("CTN_V3_LUNG1_SLABS", "4")),
                        phantom_size=int(os.environ.get("CTN_V3_SIZE", "256")),
                        phantom_slices=int(os.environ.get("CTN_V3_SLICES", "48")),
                        pool=int(os.environ.get("CTN_V3_POOL", "192")), workers=int(os.environ.get("CTN_V3_WORKERS", "0")),
                        lung1_file=str(truths) if truths.is_file() else None)
    st.min_pool = min(st.min_pool, st.pool)
    overrides = {k: int(os.environ[f"CTN_V3_{k.upper()}"]) for k in ("batch", "patch") if os.environ.get(f"CTN_V3_{k.upper()}")}
    sized = {k: int(os.environ[f"CTN_V3_{k.upper()}"]) for k in ("width", "blocks") if os.environ.get(f"CTN_V3_{k.upper()}")}
    if sized:  # another size of the same network (a larger one is what more GPU samples did not replace)
        from CTNormalizeLib.train.recipes import v3_config
        base = v3_config().arch
        overrides["arch"] = {"name": base["name"], "params": {**base["params"], **sized}}
        params = overrides["arch"]["params"]  # its own name: installing it must not replace the shipped package
        overrides["name"] = f"ctn-conditioned-v3-gpu-w{params['width']}b{params['blocks']}"
    t0 = time.perf_counter()
    pkg = _train_v3_stream(out / "run_v3_gpu", None, minutes, 0, out / overrides.get("name", "ctn-conditioned-v3-gpu"),
                           None, dev, settings=st,
                           overrides=overrides,
                           deadline=float(os.environ["CTN_TRAIN_DEADLINE"]) if os.environ.get("CTN_TRAIN_DEADLINE") else None)
    wall = time.perf_counter() - t0
    card = json.loads((pkg / "card.json").read_text())
    r, td = card["recipe"], card["training_data"]
    res = {"device": dev if dev == "cpu" else f"{dev}: {torch.cuda.get_device_name(torch.device(dev))}",
           "torch": torch.__version__, "batch": r["batch"], "patch": r["patch"], "steps_done": r["steps_done"],
           "train_s": r["time_s"],
           "steps_planned": r["steps_planned"], "stopped_early": r["stopped_early"], "samples_per_s": round(r["steps_done"] * r["batch"] / max(r["time_s"], 1e-9), 1),
           "probe_s_per_step": td["probe_s_per_step"], "setup_s": td["setup_s"], "cases_made": td["cases_made"],
           "cases_per_s": td["cases_per_s"], "wall_s": round(wall, 1), "package": str(pkg)}
    (out / "gpu_train_v3.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == "__main__":  # spawned workers import this file again
    main()
PY
CTN_OUT_DIR="$OUT_DIR" "$PY" "$SCRIPT"
