#!/usr/bin/env bash
# One GPU lease's work in one call: v3's GPU recipe (benchmarks/gpu_train_v3.sh), then the fast path's speed
# check (benchmarks/gpu_check.sh) in the time left, with what comes back kept to a few files in OUT_DIR:
#   train.log, gpu_train_v3.json, log.csv (the loss curve), pkg/card.json, pkg/model.safetensors (the card names the
#   package),
#   check.log and gpu_check.json (when the check had time). Exits non-zero when the training or the check failed.
# Carry .gpucheck/ (benchmarks/pack_gpu_check.sh). Usage: benchmarks/gpu_lease.sh [OUT_DIR]  (default $OUT)
# Environment: CTN_LEASE_S (seconds the whole script may take, default 570), CTN_TRAIN_SHARE_S (seconds from the
# start by which training must be over, default 400), and gpu_train_v3.sh's variables (a CPU try: see there).
set -uo pipefail
T0=$(date +%s)
OUT_DIR=${1:-${OUT:?give OUT_DIR or set OUT}}
mkdir -p "$OUT_DIR/pkg"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$(dirname "$0")/.."
LEASE=${CTN_LEASE_S:-570}
WORK=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT_DIR/train.log"
CTN_TRAIN_DEADLINE=$((T0 + ${CTN_TRAIN_SHARE_S:-400})) CTN_TRAIN_MINUTES=${CTN_TRAIN_MINUTES:-8} \
  timeout $((LEASE - 20)) benchmarks/gpu_train_v3.sh "$WORK" 2>&1 | tee -a "$OUT_DIR/train.log"
TRAIN_RC=${PIPESTATUS[0]}
CHECK_RC=0
PKG=$(ls -d "$WORK"/ctn-conditioned-v3-gpu* 2>/dev/null | head -n 1)  # -wWIDTHbBLOCKS for another size
cp "$PKG"/card.json "$PKG"/model.safetensors "$OUT_DIR/pkg/" || true
cp "$WORK"/gpu_train_v3.json "$WORK"/run_v3_gpu/log.csv "$OUT_DIR/" || true
LEFT=$((T0 + LEASE - $(date +%s)))
echo "speed check: ${LEFT} s left" | tee "$OUT_DIR/check.log"
if [ "$LEFT" -gt 90 ]; then
  # two measurements on a GPU (the whole CLI, in memory; speed.py runs 2 -> 1 mm on the CPU only): each child gets
  # half of what is left, and speed.py as a whole all of it (it writes its JSON only at its end)
  CTN_CHECK_TIMEOUT=$((LEFT - 10)) CTN_CHECK_ARGS="--skip s0,precision,v3 --child-timeout $(((LEFT - 30) / 2)) ${CTN_CHECK_EXTRA:-}" \
    timeout $((LEFT - 5)) benchmarks/gpu_check.sh "$OUT_DIR" 2>&1 | tee -a "$OUT_DIR/check.log"
  CHECK_RC=${PIPESTATUS[0]}
fi
rm -rf "$WORK"
ls -la "$OUT_DIR" "$OUT_DIR/pkg"
echo "training exit $TRAIN_RC, check exit $CHECK_RC"
[ "$TRAIN_RC" -eq 0 ] && [ "$CHECK_RC" -eq 0 ]
