"""Pack the lung1 slabs v3's GPU recipe trains on, for a machine without SimpleITK (int16, compressed, ~3 MB).

Usage::

    .venv/bin/python scripts/pack_v3_truths.py .gpucheck/v3_lung1.npz

then, on the GPU machine, ``ctnormalize train --recipe v3 --device cuda --truths .gpucheck/v3_lung1.npz``
(or ``benchmarks/gpu_train_v3.sh``). Needs the pyradiomics data cache (``ctnormalize`` fetches it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the .npz to write")
    ap.add_argument("--seed", type=int, default=0, help="the stream's seed (which slabs are cut)")
    args = ap.parse_args(argv)
    from CTNormalizeLib.train.dr_stream import StreamSettings, pack_lung1_truths

    path = pack_lung1_truths(StreamSettings(seed=args.seed), args.out)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
