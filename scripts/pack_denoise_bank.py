"""Pack the v3 bank's noise-free scans small enough to carry to a GPU machine (<= 64 MiB per call).

The denoise recipe reads only the bank's ``target_*`` volumes (noise-free scans). This writes
whole volumes, every other one first (so the lung1 slabs at the bank's end are among them), as int16 HU into a compressed ``.npz`` until ``--budget-mb``
is reached, with the bank's ``index_json`` rewritten for them; ``clean_slices`` reads it like
the bank::

    .venv/bin/python scripts/pack_denoise_bank.py RUN_V3/bank_dr.npz .gpucheck/denoise_clean.npz --budget-mb 40
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CTNormalizeLib.io.atomic import atomic_output  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bank")
    ap.add_argument("out")
    ap.add_argument("--budget-mb", type=float, default=40.0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.resolve() == Path(args.bank).resolve():
        print("The output would overwrite the bank.", file=sys.stderr)
        return 2
    budget = args.budget_mb * 1e6
    kept = {}
    with np.load(args.bank, allow_pickle=False) as z:
        n = json.loads(bytes(z["index_json"]).decode())["targets"]
        used = 0
        for i in [*range(0, n, 2), *range(1, n, 2)]:
            v = np.clip(np.rint(z[f"target_{i}"]), -32768, 32767).astype(np.int16)
            buf = io.BytesIO()
            np.savez_compressed(buf, v=v)
            if used + buf.tell() > budget:
                break
            used += buf.tell()
            kept[f"target_{len(kept)}"] = v
    if not kept:
        print("Not even one volume fits the budget.", file=sys.stderr)
        return 2
    kept["index_json"] = np.frombuffer(json.dumps({"targets": len(kept), "pairs": [],
                                                   "packed_from": Path(args.bank).name}).encode(), np.uint8)
    def verify(tmp: Path):  # every member readable, CRCs included, before it is published
        with zipfile.ZipFile(tmp) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise OSError(f"{bad} in {tmp} is damaged")

    with atomic_output(out, verify=verify) as tmp:
        np.savez_compressed(tmp, **kept)
    print(f"{len(kept) - 1} of {n} noise-free volumes, {out.stat().st_size / 1e6:.1f} MB -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
