"""Speed of the learned normalization: default model vs the S0 reference generator, on this machine.

Usage::

    python benchmarks/speed.py [--out benchmarks/results/speed.json] [--threads N] [--quick]

Cases (CPU, default model from Resources/Models, whole pipeline of ``inference.run_model``:
z resampling, body mask, tiled inference, blending, QC):

- ``same_grid``: a 512 x 512 x 300 volume (1 mm), sharp / 25 % dose -> smooth / full dose / 1 mm;
- ``2mm_to_1mm``: 512 x 512 x 150 at 2 mm -> 300 slices at 1 mm.

Each case runs in a fresh subprocess so its peak RSS is its own. The S0 reference
generator (3D EDSR, 64 channels, untrained weights: speed does not depend on them) runs
in the same invocation on a sub-volume; its time for the full case is extrapolated from
the measured output-voxel throughput (a full run would take far over 10 minutes), and
the JSON gives the throughput ratio. With CUDA, the default model is also timed in fp16/bf16.
``--quick`` uses 128 x 128 in-plane (for smoke tests). Output: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"time_s": 60.0, "peak_rss_gb": 4.0, "ratio_vs_s0": 20.0, "gpu_time_s": 1.0}


def _volume(nz: int, n: int, z_spacing: float, seed: int = 0):
    """A chest-like synthetic volume (body, lungs, spine, noise) built slice by slice."""
    from CTNormalizeLib.volume import Volume

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    body = ((y - 0.5) / 0.36) ** 2 + ((x - 0.5) / 0.45) ** 2 < 1
    lung_l = ((y - 0.47) / 0.22) ** 2 + ((x - 0.32) / 0.12) ** 2 < 1
    lung_r = ((y - 0.47) / 0.22) ** 2 + ((x - 0.68) / 0.12) ** 2 < 1
    spine = ((y - 0.78) / 0.05) ** 2 + ((x - 0.5) / 0.05) ** 2 < 1
    base = np.where(body, 40.0, -1000.0).astype(np.float32)
    base[lung_l | lung_r] = -860.0
    base[spine] = 700.0
    hu = np.empty((nz, n, n), np.float32)
    for k in range(nz):
        hu[k] = base + rng.normal(0, 40, (n, n)).astype(np.float32) * body
    return Volume(hu, spacing=(z_spacing, 0.7, 0.7))


def _memory_package(arch: dict, io: dict, name: str):
    """An in-memory package around a freshly built (untrained) module, covering everything."""
    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.models.registry import ModelPackage

    card = {"name": name, "architecture": arch, "io": io, "sha256": "untrained",
            "covers": {"source": {}, "targets": [{}]}}
    m = build_model(arch).eval()
    return ModelPackage(Path("."), card, m)


def _default_package():
    from CTNormalizeLib.models.registry import find_model, model_dirs
    from CTNormalizeLib.protocols import parse_spec

    pkg = find_model(parse_spec("kernel=sharp,dose=0.25,thickness=2"), parse_spec("kernel=smooth,dose=1,thickness=1"),
                     dirs=[model_dirs()[0]])
    if pkg is not None and pkg.card["architecture"]["name"] == "conditioned2.5d":
        return pkg, "shipped"
    from CTNormalizeLib.train.recipes import IO_DEFAULT, default_config

    cfg = default_config()
    return _memory_package(cfg.arch, dict(IO_DEFAULT, context=cfg.context), "default-untrained"), "untrained"


def child(args) -> dict:
    import torch

    from CTNormalizeLib.inference import run_model
    from CTNormalizeLib.protocols import parse_spec

    torch.set_num_threads(args.threads)
    nz, n = args.nz, args.n
    vol = _volume(nz, n, args.z_spacing)
    src = parse_spec(f"kernel=sharp,dose=0.25,thickness={args.z_spacing:g}")
    tgt = parse_spec("kernel=smooth,dose=1,thickness=1")
    if args.child == "s0":
        io = {"hu_window": [-1100, 900], "scale": {"offset": 0, "divisor": 1000}, "z_up_factor": 2}
        pkg, which = _memory_package({"name": "s0_edsr3d", "params": {}}, io, "s0-untrained"), "untrained"
        src = parse_spec(f"kernel=sharp,dose=0.25,thickness={args.z_spacing:g}")
    else:
        pkg, which = _default_package()
    device = args.device
    if device != "cpu":
        run_model(pkg, _volume(min(nz, 8), n, args.z_spacing), src, tgt, device=device)  # warm-up
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = run_model(pkg, vol, src, tgt, device=device, tile=args.tile)
    if device != "cpu":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out_vox = int(np.prod(res.volume.shape))
    return {"model": pkg.name, "weights": which, "device": res.device, "input_shape": list(vol.shape),
            "output_shape": list(res.volume.shape), "wall_s": round(wall, 2),
            "peak_rss_gb": round(peak_kb / 2 ** 20, 3), "output_voxels_per_s": out_vox / wall,
            "timings": {k: round(v, 2) for k, v in res.timings.items()}, "warnings": [w["code"] for w in res.warnings]}


def _run_child(extra: list, threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(threads)] + extra
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    if p.returncode != 0:
        return {"error": p.stderr[-2000:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="128 px in-plane (smoke test)")
    ap.add_argument("--skip-s0", action="store_true")
    # child mode (internal)
    ap.add_argument("--child", choices=["default", "s0"])
    ap.add_argument("--nz", type=int, default=300)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--z-spacing", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tile", type=int, default=None)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    import torch

    n = 128 if args.quick else 512
    cases = {
        "same_grid": ["--nz", "300", "--z-spacing", "1"],
        "2mm_to_1mm": ["--nz", "150", "--z-spacing", "2"],
    }
    result = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads,
                          "torch": torch.__version__, "load_average_at_start": os.getloadavg()},
              "targets": TARGETS, "in_plane": n, "cases": {}}
    for name, extra in cases.items():
        r = _run_child(["--child", "default", "--n", str(n)] + extra, args.threads)
        if "wall_s" in r:
            r["meets_time_target"] = r["wall_s"] <= TARGETS["time_s"]
            r["meets_rss_target"] = r["peak_rss_gb"] <= TARGETS["peak_rss_gb"]
        result["cases"][name] = r
        print(f"{name}: {r.get('wall_s')} s, peak RSS {r.get('peak_rss_gb')} GB", file=sys.stderr)
    if not args.skip_s0:
        # S0 on a sub-volume: 16 slices of 2 mm, a quarter of the in-plane area -> 31 slices out; whole
        # slices per window (no in-plane overlap), 16-slice z slabs with a 4-slice halo
        sub = max(64, n // 2)
        s0 = _run_child(["--child", "s0", "--n", str(sub), "--nz", "16", "--z-spacing", "2", "--tile", str(sub)],
                        args.threads)
        result["s0_reference"] = s0
        if "output_voxels_per_s" in s0:
            for name, r in result["cases"].items():
                if "output_voxels_per_s" not in r:
                    continue
                out_vox = float(np.prod(r["output_shape"]))
                r["s0_extrapolated_s"] = round(out_vox / s0["output_voxels_per_s"], 1)
                r["throughput_ratio_vs_s0"] = round(r["output_voxels_per_s"] / s0["output_voxels_per_s"], 1)
                r["meets_ratio_target"] = r["throughput_ratio_vs_s0"] >= TARGETS["ratio_vs_s0"]
    if torch.cuda.is_available():
        result["gpu"] = _run_child(["--child", "default", "--n", str(n), "--nz", "300", "--device", "cuda"],
                                   args.threads)
    else:
        result["gpu"] = {"note": "no CUDA device on this machine"}
    result["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
