"""Cohort throughput: ``ctnormalize batch`` on a 4-case cohort with 1 and with 2 Dask workers.

Usage::

    python benchmarks/cohort_throughput.py [--out benchmarks/results/cohort_throughput.json]
                                           [--workers 1 2] [--slices 16] [--method auto]

The cohort is four slabs of ``--slices`` slices of lung1 (512 x 512, 0.57 mm pixels,
5 mm slices), written as NRRD, each with a source protocol in the manifest; every case
is normalized to ``kernel=smooth,dose=1`` by ``--method auto`` (before v3 shipped: the classical pipeline, non-local means
denoising dominates) and gets the emphysema index and the before/after signatures. Each
worker count runs the whole command in a fresh output folder (nothing skipped), cluster
start and the cohort report included; the JSON gives wall seconds, cases per minute,
per-case seconds, the speed-up over one worker and the machine's load average.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = ("kernel=B45f,dose=0.5", "kernel=B30f,dose=0.4", "kernel=B60f,dose=0.6", "kernel=B45f,dose=0.3")


def make_cohort(folder: Path, slices: int) -> Path:
    """Four lung1 slabs as NRRD files and their manifest."""
    import SimpleITK as sitk

    from CTNormalizeLib import testdata

    image, _ = testdata.pyradiomics_case("lung1")
    img = sitk.ReadImage(str(image))
    nz = img.GetSize()[2]
    starts = [int(round(k * (nz - slices) / 3)) for k in range(4)]
    lines = ["case,input,source,group"]
    for k, (z0, src) in enumerate(zip(starts, SOURCES)):
        path = folder / f"slab{k}.nrrd"
        sitk.WriteImage(img[:, :, z0:z0 + slices], str(path), True)
        lines.append(f'slab{k},{path.name},"{src}",{src.split(",")[0].split("=")[1]}')
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def run_batch(manifest: Path, out: Path, workers: int, method: str) -> dict:
    cmd = [sys.executable, "-m", "CTNormalizeLib", "batch", str(manifest), "-o", str(out), "--target",
           "kernel=smooth,dose=1", "--method", method, "--workers", str(workers), "--emphysema",
           "--progress", "json"]
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"batch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(out / "batch.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"workers": workers, "wall_s": round(wall, 2), "cases": len(rows),
            "cases_per_minute": round(60.0 * len(rows) / wall, 3),
            "case_seconds": {r["case"]: float(r["seconds"]) for r in rows},
            "sum_case_seconds": round(sum(float(r["seconds"]) for r in rows), 2),
            "statuses": sorted({r["status"] for r in rows}), "method": sorted({r["method"] for r in rows}),
            "load_average_before": [round(v, 2) for v in load],
            "load_average_after": [round(v, 2) for v in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cohort_throughput.json"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--method", default="auto")
    args = ap.parse_args(argv)

    from CTNormalizeLib import __version__

    runs = []
    with tempfile.TemporaryDirectory(prefix="ctn-cohort-") as tmp:
        manifest = make_cohort(Path(tmp), args.slices)
        for w in args.workers:
            res = run_batch(manifest, Path(tmp) / f"out{w}", w, args.method)
            print(f"{w} worker(s): {res['wall_s']} s, {res['cases_per_minute']} cases/min", file=sys.stderr)
            runs.append(res)
    base = next((r for r in runs if r["workers"] == 1), None)
    for r in runs:
        r["speedup_vs_1_worker"] = round(base["wall_s"] / r["wall_s"], 3) if base else None
    result = {"benchmark": "cohort_throughput", "engine_version": __version__, "cases": 4,
              "volume": f"lung1 slabs, {args.slices} x 512 x 512", "target": "kernel=smooth,dose=1",
              "cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "python": platform.python_version(), "runs": runs,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
