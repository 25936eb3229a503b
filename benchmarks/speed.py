"""Speed of the learned normalization on one device, in one run: whole process, in memory, stages, memory, S0 ratio.

Usage::

    python benchmarks/speed.py [--device cpu|cuda] [--out benchmarks/results/speed.json] [--threads N]
                               [--model NAME] [--input PACK.npz] [--quick] [--skip cli,s0,precision,qc,v3]
                               [--source SPEC] [--target SPEC]

The input is a real chest CT made 512 x 512 x 300 (``benchmarks/chest.py``: pyradiomics'
lung1 on 300 slices, integer HU, labelled 1 mm). The source is given as
``kernel=sharp,dose=0.25,thickness=1`` and the target is ``emphysema-reference`` (smooth,
full dose, 1 mm): the same z grid, the MTF-ratio front-end active. lung1's pixels measure as a
smooth kernel, so the measured signatures make this a noise-only pair (the learned chain's
dose-only settings run; the report's ``steps[].seconds`` show the split). ``--source`` /
``--target`` change the pair of the whole-CLI run. Every measurement runs
in a fresh subprocess, so peak RSS and peak GPU memory are its own:

- ``cli``: the whole ``ctnormalize normalize`` process on the chest as an int16 gzip NRRD
  (as a scanner exports it): interpreter start, imports, read, plan (signatures),
  normalization with the default model (``--method NAME``), write; wall time measured
  from outside, per-stage times from its run report.
- ``memory``: ``run_model`` in memory (after a warm-up on a GPU), per-stage times; a second
  case 2 mm -> 1 mm (150 -> 299 slices) on the CPU.
- ``v3``: the same for an untrained network of ctn-conditioned-v3's architecture (speed
  does not depend on the weights), until that model ships.
- ``s0``: the S0 reference generator (untrained: speed does not depend on the weights)
  through ``run_model`` on a 16 x 256 x 256 sub-volume (2 mm -> 31 slices of 1 mm), same
  device; the ratio of output-voxel throughputs (end to end) to the default model's.
- ``precision``: the device pipeline in fp32 / fp16 / bf16 against the CPU pipeline's fp32
  output (48 mid-chest slices on a GPU; 24 on the CPU, where oneDNN's bf16/fp16 emulate
  the GPU's arithmetic).
- ``qc``: the QC figures on every slice against the default subsample (CPU).

Output: one JSON object (``--out``); a summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SOURCE = "kernel=sharp,dose=0.25,thickness=1"
TARGET = "emphysema-reference"
TARGETS = {"cpu_cli_s": 30.0, "cpu_peak_rss_gb": 3.0, "ratio_vs_s0": 20.0, "gpu_memory_s": 1.0, "gpu_cli_s": 2.5}
V3_ARCH = {"name": "conditioned2.5d", "params": {"context": 5, "width": 48, "head": 16, "blocks": 6, "cond_dim": 16}}


def _peaks(device: str) -> dict:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds (user + system, all threads): on n idle cores the wall time is at least cpu_s / n
    out = {"peak_rss_gb": round(ru.ru_maxrss / 2 ** 20, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1)}
    if device.startswith("cuda"):
        import torch

        out["gpu_peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
        out["gpu_peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 3)
    return out


def _package(name: str | None, arch: dict | None = None):
    """An installed package (``name``, else the highest-priority one) or an untrained in-memory one of ``arch``."""
    from CTNormalizeLib.models.registry import ModelPackage, list_models

    if arch is None:
        pkgs = [p for p in list_models() if p.card["architecture"]["name"] == "conditioned2.5d"]
        return next(p for p in pkgs if name in (None, p.name))
    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.train.recipes import IO_DEFAULT

    io = dict(IO_DEFAULT, context=5, z_up_factor=None, frontend="mtf_ratio")
    card = {"name": f"untrained-{arch['name']}", "architecture": arch, "io": io, "sha256": "untrained",
            "covers": {"source": {}, "targets": [{}]}}
    if arch["params"].get("cond_dim"):
        io.update(conditioning="signature", frontend="mtf_ratio_measured", frontend_lambda=0.04)
        card["covers"] = {"conditioning": "signature", "source": {}, "targets": {}}
    return ModelPackage(Path("."), card, build_model(arch).eval())


def _run(pkg, vol, plan, device, **kw):
    from CTNormalizeLib.inference import run_model
    from CTNormalizeLib.inference.methods import effective_protocols

    src, tgt = effective_protocols(plan)
    return run_model(pkg, vol, src, tgt, device=device, plan=plan, **kw)


def _sync(device):
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def child_memory(args) -> dict:
    """``run_model`` in memory on the chest (after a warm-up on a GPU); stages, peaks, throughput."""
    import torch

    from chest import chest
    from CTNormalizeLib.plan import make_plan

    torch.set_num_threads(args.threads)
    vol = chest(args.nz, args.input, args.in_plane)
    if args.z_spacing != 1.0:
        vol = vol.with_array(vol.hu, spacing=(args.z_spacing,) + tuple(vol.spacing[1:]))
    pkg = _package(args.model, V3_ARCH if args.arch == "v3" else None)
    t = time.perf_counter()
    plan = make_plan(vol, SOURCE.replace("thickness=1", f"thickness={args.z_spacing:g}"), TARGET, method="mtf_ratio",
                     device=args.device)
    plan_s = time.perf_counter() - t
    if args.device != "cpu":
        _run(pkg, vol.with_array(vol.hu[:16]), plan, args.device)  # warm-up: context, kernels, pinned buffers
        _sync(args.device)
        torch.cuda.reset_peak_memory_stats()
    walls, res = [], None
    for _ in range(args.repeat):
        t = time.perf_counter()
        res = _run(pkg, vol, plan, args.device)
        _sync(args.device)
        walls.append(time.perf_counter() - t)
    out_vox = int(np.prod(res.volume.shape))
    r = {"model": pkg.name, "device": res.device, "input_shape": list(vol.shape),
         "output_shape": list(res.volume.shape), "wall_s": [round(w, 3) for w in walls],
         "plan_s": round(plan_s, 2), "output_voxels_per_s": out_vox / min(walls),
         "timings": {k: round(v, 3) for k, v in res.timings.items()}, "warnings": [w["code"] for w in res.warnings],
         "qc": {k: res.qc.get(k) for k in ("hu_drift", "changed_fraction", "seam_ratio", "slices_used", "tile")}}
    r.update(_peaks(args.device))  # before the extra QC below
    if args.qc_full:
        r["qc_full_vs_subsample"] = _qc_full(res, vol, plan, pkg)
    return r


def _qc_full(res, vol, plan, pkg) -> dict:
    """The QC figures on every slice next to the pipeline's subsample (CPU, same-grid case)."""
    from CTNormalizeLib.inference import masks
    from CTNormalizeLib.inference.cpu_path import model_inputs
    from CTNormalizeLib.inference.methods import effective_protocols
    from CTNormalizeLib.inference.qc import measure_qc
    from CTNormalizeLib.inference.runspec import make_runspec, on_grid

    src, tgt = on_grid(*effective_protocols(plan), vol)
    spec = make_runspec(pkg.card, src, tgt, plan)
    x_in, x_model = model_inputs(vol.hu, vol.spacing, spec)
    body = masks.body_mask(x_in)
    t = time.perf_counter()
    full, _ = measure_qc(x_in, res.volume.hu, body, slice_step=1,
                         change_reference=x_model if x_model is not x_in else None)
    keys = ("hu_drift", "changed_fraction", "slices_used")
    return {"all_slices": {k: full[k] for k in keys}, "all_slices_qc_s": round(time.perf_counter() - t, 2),
            "subsample": {k: res.qc[k] for k in keys}, "subsample_qc_s": round(res.timings["qc_s"], 2)}


def child_s0(args) -> dict:
    """The untrained S0 generator through ``run_model`` on a sub-volume (16 slices of 2 mm -> 31 of 1 mm)."""
    import torch

    from chest import chest
    from CTNormalizeLib.inference import run_model
    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.models.registry import ModelPackage
    from CTNormalizeLib.protocols import parse_spec

    torch.set_num_threads(args.threads)
    vol = chest(16, args.input, args.in_plane or 256)  # a quarter of the in-plane area: S0 is slow
    vol = vol.with_array(vol.hu, spacing=(2.0,) + tuple(vol.spacing[1:]))
    io = {"hu_window": [-1100, 900], "scale": {"offset": 0, "divisor": 1000}, "z_up_factor": 2}
    arch = {"name": "s0_edsr3d", "params": {}}
    pkg = ModelPackage(Path("."), {"name": "s0-untrained", "architecture": arch, "io": io, "sha256": "untrained",
                                   "covers": {"source": {}, "targets": [{}]}}, build_model(arch).eval())
    src, tgt = parse_spec("kernel=sharp,dose=0.25,thickness=2"), parse_spec("kernel=smooth,dose=1,thickness=1")
    kw = dict(device=args.device, tile=vol.shape[1])
    if args.device != "cpu":
        run_model(pkg, vol.with_array(vol.hu[:8]), src, tgt, **kw)
        _sync(args.device)
    t = time.perf_counter()
    res = run_model(pkg, vol, src, tgt, **kw)
    _sync(args.device)
    wall = time.perf_counter() - t
    return {"device": res.device, "input_shape": list(vol.shape), "output_shape": list(res.volume.shape),
            "wall_s": round(wall, 3), "output_voxels_per_s": float(np.prod(res.volume.shape)) / wall,
            **_peaks(args.device)}


def child_precision(args) -> dict:
    """|HU difference| inside the body of the device pipeline (fp32, fp16, bf16) from the CPU pipeline's fp32.

    The CPU pipeline's fp32 output is the reference (the output the engine has always
    given on a CPU). Mid-chest slices: 48 on a GPU, 24 on the CPU (whose bf16/fp16 emulate
    the GPU's arithmetic, slowly).
    """
    import torch

    from chest import chest
    from CTNormalizeLib.inference import masks
    from CTNormalizeLib.plan import make_plan

    torch.set_num_threads(args.threads)
    vol = chest(args.nz, args.input, args.in_plane)
    half = 12 if args.device == "cpu" else 24
    mid = vol.shape[0] // 2
    vol = vol.with_array(np.ascontiguousarray(vol.hu[max(0, mid - half):mid + half]))
    pkg = _package(args.model)
    plan = make_plan(vol, SOURCE, TARGET, method="mtf_ratio", device="cpu")
    body = masks.body_mask(vol.hu)
    ref = _run(pkg, vol, plan, "cpu").volume.hu
    out = {"model": pkg.name, "shape": list(vol.shape), "reference": "CPU pipeline, fp32",
           "model_change_mean_hu": float(np.abs(ref - vol.hu)[body].mean())}
    for p in ("fp32", "fp16", "bf16"):
        d = np.abs(_run(pkg, vol, plan, args.device, pipeline="resident", precision=p).volume.hu - ref)[body]
        out[f"{args.device}_{p}"] = {"max_hu": float(d.max()), "p99_9_hu": float(np.quantile(d, 0.999)),
                                     "mean_hu": float(d.mean())}
    return out


def child_cli(args) -> dict:
    """The CLI's ``main`` in this fresh process; peak memory afterwards (the wall time is measured outside)."""
    from CTNormalizeLib.cli.main import main

    cmd = ["normalize", args.cli_in, "-o", args.cli_out, "--source", args.source, "--target", args.target,
           "--method", args.model, "--device", args.device, "--progress", "none", "--report", args.cli_report]
    code = main(cmd)
    return {"exit_code": code, **_peaks(args.device)}


def _child(mode: str, args, extra=()) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--threads", str(args.threads),
           "--device", args.device, "--nz", str(args.nz)] + list(extra)
    for k in ("input", "in_plane", "model", "source", "target"):
        if getattr(args, k):
            cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), timeout=args.child_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.child_timeout} s"}
    wall = time.perf_counter() - t
    if p.returncode != 0:
        return {"error": p.stderr[-3000:]}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["process_wall_s"] = round(wall, 2)
    r["load_average"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    print(f"  {mode} {' '.join(extra)}: {wall:.1f} s (load {load0:.1f})", file=sys.stderr, flush=True)
    return r


def _cli_case(args, tmp: Path) -> dict:
    from chest import chest
    from CTNormalizeLib.io import write_volume

    vol = chest(args.nz, args.input, args.in_plane)
    inp = tmp / "chest.nrrd"
    write_volume(vol, inp, dtype="int16", compress=True)
    del vol
    extra = ["--cli-in", str(inp), "--cli-out", str(tmp / "out.nrrd"), "--cli-report", str(tmp / "report.json")]
    r = _child("cli", args, extra)
    if "error" not in r:
        rep = json.loads((tmp / "report.json").read_text())
        r.update(method=rep["method"], device=rep["device"], output_shape=rep["output_shape"],
                 stages={k: round(v, 3) for k, v in rep["timings"].items()}, input_mb=round(inp.stat().st_size / 1e6, 1),
                 output_mb=round((tmp / "out.nrrd").stat().st_size / 1e6, 1))
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--model", default=None, help="installed 2.5D model (default: the highest priority)")
    ap.add_argument("--input", default=None, help="lung1 pack (.npz, benchmarks/chest.py); default: the cache")
    ap.add_argument("--quick", action="store_true", help="128 px in-plane, 40 slices (smoke test)")
    ap.add_argument("--skip", default="", help="comma-separated: cli,memory,v3,s0,precision,qc")
    ap.add_argument("--child-timeout", type=int, default=3000, help="seconds per measurement")
    ap.add_argument("--child", choices=["memory", "s0", "precision", "cli"])
    ap.add_argument("--nz", type=int, default=300)
    ap.add_argument("--source", default=SOURCE, help=f"source protocol of the whole-CLI run (default {SOURCE})")
    ap.add_argument("--target", default=TARGET, help=f"target of the whole-CLI run (default {TARGET})")
    ap.add_argument("--in-plane", type=int, default=None)
    ap.add_argument("--z-spacing", type=float, default=1.0)
    ap.add_argument("--arch", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--qc-full", action="store_true")
    ap.add_argument("--cli-in")
    ap.add_argument("--cli-out")
    ap.add_argument("--cli-report")
    args = ap.parse_args(argv)
    if args.child:
        fn = {"memory": child_memory, "s0": child_s0, "precision": child_precision, "cli": child_cli}[args.child]
        print(json.dumps(fn(args)))
        return 0
    return _parent(args)


def _machine(args) -> dict:
    import torch

    m = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads,
         "torch": torch.__version__, "python": platform.python_version(), "device": args.device,
         "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    if args.device.startswith("cuda"):
        m["gpu"] = torch.cuda.get_device_name(0)
    try:
        m["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                              if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return m


def _parent(args) -> int:
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.nz, args.in_plane = 40, 128
    if args.model is None:
        args.model = _package(None).name
    gpu = args.device != "cpu"
    # the pair of the whole-CLI run (--source/--target); the other measurements keep SOURCE -> TARGET
    result = {"machine": _machine(args), "targets": TARGETS, "source": SOURCE, "target": TARGET, "model": args.model,
              "cli_source": args.source, "cli_target": args.target}
    t0 = time.perf_counter()
    if "cli" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            result["cli"] = _cli_case(args, Path(tmp))
    if "memory" not in skip:
        extra = ["--repeat", "2" if gpu else "1"] + ([] if gpu or "qc" in skip else ["--qc-full"])
        result["memory"] = {"same_grid": _child("memory", args, extra)}
        if not gpu and not args.quick:
            args_nz = args.nz
            args.nz = 150
            result["memory"]["2mm_to_1mm"] = _child("memory", args, ["--z-spacing", "2"])
            args.nz = args_nz
    if "v3" not in skip:
        result["v3_architecture_untrained"] = _child("memory", args, ["--arch", "v3", "--repeat", "2" if gpu else "1"])
    if "s0" not in skip:
        s0 = _child("s0", args, [])
        result["s0_reference"] = s0
        _ratios(result, s0)
    if "precision" not in skip:
        result["precision"] = _child("precision", args)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["benchmark_wall_s"] = round(time.perf_counter() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


def _ratios(result: dict, s0: dict) -> None:
    """Output-voxel throughput of each in-memory run over the S0 generator's, same device, end to end."""
    if "output_voxels_per_s" not in s0:
        return
    runs = dict(result.get("memory", {}))
    if "v3_architecture_untrained" in result:
        runs["v3_architecture_untrained"] = result["v3_architecture_untrained"]
    for name, r in runs.items():
        if "output_voxels_per_s" in r:
            r["throughput_ratio_vs_s0"] = round(r["output_voxels_per_s"] / s0["output_voxels_per_s"], 1)
            r["s0_extrapolated_s"] = round(float(np.prod(r["output_shape"])) / s0["output_voxels_per_s"], 1)


if __name__ == "__main__":
    sys.exit(main())
