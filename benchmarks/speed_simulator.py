"""Speed of the physics simulator on this machine.

Usage (from the repository root)::

    .venv/bin/python benchmarks/speed_simulator.py [--out benchmarks/results/speed_simulator.json]
                                                   [--skip-large]

Cases:

- ``pair_256``: a 64 x 256 x 256 phantom truth (0.5 mm slices, 0.8 mm pixels) simulated as a
  sharp / 25 % dose / 2 mm source and a smooth / full dose / 1 mm target (one shared forward
  projection), then the same pair plus the target's replicate through ``simulate_pair``;
- ``volume_512``: a 100 x 512 x 512 truth (0.5 mm slices, 0.7 mm pixels) simulated once as a
  standard / full dose / 1 mm scan.

Phantom generation is timed separately. Wall and CPU seconds are reported with the load
average: on a shared machine wall time can be several times the CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CTNormalizeLib.protocols import parse_spec  # noqa: E402
from CTNormalizeLib.simulate import (  # noqa: E402
    SIMULATOR_VERSION,
    make_phantom,
    project_truth,
    simulate_pair,
    simulate_scan,
)

SOURCE = "kernel=sharp,dose=0.25,thickness=2"
TARGET = "kernel=smooth,dose=1,thickness=1"


class Timer:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = round(time.perf_counter() - self.w, 3)
        self.cpu = round(time.process_time() - self.c, 3)

    def as_dict(self):
        return {"wall_s": self.wall, "cpu_s": self.cpu}


def bench_pair(shape=(64, 256, 256), spacing=(0.5, 0.8, 0.8)) -> dict:
    with Timer() as tp:
        ph = make_phantom(1, shape=shape, spacing=spacing, emphysema=0.05, nodules=2)
    truth = ph.volume
    with Timer() as tproj:
        proj = project_truth(truth)
    with Timer() as ts:
        src = simulate_scan(truth, parse_spec(SOURCE), 1, projections=proj)
    with Timer() as tt:
        tgt = simulate_scan(truth, parse_spec(TARGET), 2, projections=proj)
    with Timer() as tpair:
        simulate_pair(truth, parse_spec(SOURCE), parse_spec(TARGET), 3)
    pair_wall = tproj.wall + ts.wall + tt.wall
    pair_cpu = tproj.cpu + ts.cpu + tt.cpu
    return {
        "truth_shape": list(shape), "truth_spacing": list(spacing),
        "source": SOURCE, "target": TARGET,
        "source_shape": list(src.hu.shape), "target_shape": list(tgt.hu.shape),
        "views": src.meta["simulation"]["views"], "detector_bins": src.meta["simulation"]["detector_bins"],
        "phantom": tp.as_dict(),
        "forward_projection": tproj.as_dict(),
        "source_scan": ts.as_dict(),
        "target_scan": tt.as_dict(),
        "pair_total": {"wall_s": round(pair_wall, 3), "cpu_s": round(pair_cpu, 3)},
        "simulate_pair_with_replicate": tpair.as_dict(),
    }


def bench_large(shape=(100, 512, 512), spacing=(0.5, 0.7, 0.7)) -> dict:
    with Timer() as tp:
        ph = make_phantom(2, shape=shape, spacing=spacing, emphysema=0.05, nodules=2)
    with Timer() as tsim:
        scan = simulate_scan(ph.volume, parse_spec("kernel=standard,dose=1,thickness=1"), 1)
    return {"truth_shape": list(shape), "truth_spacing": list(spacing), "protocol": "kernel=standard,dose=1,thickness=1",
            "scan_shape": list(scan.hu.shape), "views": scan.meta["simulation"]["views"],
            "phantom": tp.as_dict(), "simulate_scan": tsim.as_dict(),
            "seconds_per_output_slice_wall": round(tsim.wall / scan.hu.shape[0], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/speed_simulator.json")
    ap.add_argument("--skip-large", action="store_true", help="skip the 512 x 512 x 100 case")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    result = {
        "benchmark": "speed_simulator",
        "simulator_version": SIMULATOR_VERSION,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()},
        "load_average_before": [round(x, 2) for x in load0],
        "pair_256": bench_pair(),
    }
    if not args.skip_large:
        result["volume_512"] = bench_large()
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from CTNormalizeLib.io.atomic import atomic_write_text

    atomic_write_text(out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
