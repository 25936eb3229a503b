"""Speed of the classical normalization methods on a 512 x 512 x 100 volume, on this machine.

Usage::

    python benchmarks/speed_classical.py [--out benchmarks/results/speed_classical.json]
                                         [--shape 100 512 512] [--skip nlm]

The volume is the image-domain synthetic chest of ``CTNormalizeLib.classical.synthetic``
(sharp kernel, 25 % dose, 2 mm slices, 0.7 mm pixels), so this measures normalization
only, not the simulator. Each method runs once through its method-table row on a plan made
with the explicit source protocol; the JSON gives wall seconds, seconds per slice and what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _volume(shape, seed=0):
    from CTNormalizeLib.classical.synthetic import disk_phantom, scan
    from CTNormalizeLib.volume import Volume

    nz, ny, nx = shape
    sp = (2.0, 0.7, 0.7)
    truth = disk_phantom(shape, sp, seed=seed)
    # the truth is already on the 2 mm grid: apply kernel + noise, keep the z grid
    src, ssp = scan(truth, sp, "sharp", 0.25, 2.0, seed=seed + 1)
    ref, _ = scan(truth, sp, "smooth", 1.0, 2.0, seed=seed + 2)
    return Volume(src, spacing=ssp), Volume(ref, spacing=ssp)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed_classical.json"))
    ap.add_argument("--shape", type=int, nargs=3, default=[100, 512, 512], metavar=("Z", "Y", "X"))
    ap.add_argument("--skip", nargs="*", default=[], help="case names to skip")
    args = ap.parse_args(argv)

    from CTNormalizeLib.methods import get_method
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.protocols import parse_spec

    t0 = time.perf_counter()
    vol, ref = _volume(tuple(args.shape))
    t_make = time.perf_counter() - t0
    source = parse_spec("kernel=sharp,dose=0.25,thickness=2")
    cases = {
        # name: (method, target spec, options)
        "mtf_ratio": ("mtf_ratio", "kernel=smooth,dose=0.25,thickness=2", {}),
        "frequency_decomposition": ("frequency_decomposition", "kernel=smooth,dose=1,thickness=2", {}),
        "histogram_match": ("histogram_match", "kernel=smooth,dose=1,thickness=2", {}),
        "denoise_nlm": ("denoise", "kernel=sharp,dose=1,thickness=2", {"denoise_method": "nlm"}),
        "denoise_gaussian": ("denoise", "kernel=sharp,dose=1,thickness=2", {"denoise_method": "gaussian"}),
        "z_profile_thick_to_thin": ("z_profile", "kernel=sharp,dose=0.25,thickness=1", {}),
        "z_profile_thin_to_thick": ("z_profile", "kernel=sharp,dose=0.25,thickness=5", {}),
        "classical": ("classical", "kernel=smooth,dose=1,thickness=1", {}),
        "classical_gaussian_denoise": ("classical", "kernel=smooth,dose=1,thickness=1", {"denoise_method": "gaussian"}),
    }
    results = {}
    for name, (method, spec, opts) in cases.items():
        if name in args.skip:
            continue
        target = parse_spec(spec)
        t = time.perf_counter()
        plan = make_plan(vol, source, target, method=method, texture="target")
        res = get_method(method).run(vol, plan, None, ref if method == "histogram_match" else None, options=opts)
        dt = time.perf_counter() - t
        results[name] = {
            "method": method,
            "target": spec,
            "options": opts,
            "seconds": round(dt, 2),
            "seconds_per_input_slice": round(dt / vol.shape[0], 4),
            "steps_done": [s["method"] for s in res.steps if s["done"]],
            "output_shape": list(res.volume.shape),
        }
        print(f"{name:26s} {dt:7.2f} s", file=sys.stderr, flush=True)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    report = {
        "benchmark": "speed_classical",
        "shape_zyx": list(vol.shape),
        "spacing_zyx": list(vol.spacing),
        "volume_seconds_to_make": round(t_make, 2),
        "machine": {"cpus": cpus, "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__,
                    "load_average_1_5_15min_at_end": load},
        "note": "wall times on a shared machine; compare with the load average",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
