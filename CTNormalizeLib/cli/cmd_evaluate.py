"""``ctnormalize evaluate``: paired metrics of files against a target, or the quality benchmark."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from ..errors import BadInputError

NAME = "evaluate"
HELP = "paired metrics vs a target (with the replicate floor), or the quality benchmark"
ORDER = 60
DESCRIPTION = (
    "Files mode: ctnormalize evaluate --source S --output O --target T [--replicate R] [--json] "
    "[--report R.html] compares the source (the problem), the normalized output and a replicate "
    "(the floor: the target protocol with independent noise) with the target, on the target's "
    "grid, and reports 'gap closed' = (m_src - m_out)/(m_src - m_rep). "
    "Benchmark mode: ctnormalize evaluate --benchmark [--full] [--out-dir DIR] [--report R.html] "
    "runs the held-out benchmark over source protocols, targets and methods."
)


def add_arguments(p):
    g = p.add_argument_group("files mode")
    g.add_argument("--source", help="source CT (as acquired)")
    g.add_argument("--output", help="normalized CT")
    g.add_argument("--target", help="target CT (the reference)")
    g.add_argument("--replicate", help="replicate CT: target protocol, independent noise (the floor)")
    g.add_argument("--segments", help="labelmap on the target's grid (e.g. nodules) for radiomic agreement")
    g.add_argument("--lung-mask", help="lung mask on the target's grid (default: segmented from the target)")
    g.add_argument("--window", default="-1350,150",
                   help="HU window for PSNR/SSIM, written --window=LO,HI (default --window=-1350,150)")
    g.add_argument("--threshold", type=float, default=-950.0, help="emphysema threshold in HU (default -950)")
    g.add_argument("--lpips-weights", help="AlexNet backbone weights file for LPIPS (nothing is downloaded; "
                                          "without it LPIPS is reported as absent)")
    g.add_argument("--method", default=None, help="method or model name, recorded in the provenance")
    g.add_argument("--source-protocol", default=None, help="source protocol spec, recorded in the provenance")
    g.add_argument("--target-protocol", default=None, help="target protocol spec or preset, recorded in the provenance")
    g.add_argument("--model-sha256", default=None, help="sha256 of the model used, recorded in the provenance")
    g.add_argument("--out", help="write the result JSON to this file")
    b = p.add_argument_group("benchmark mode")
    b.add_argument("--benchmark", action="store_true", help="run the quality benchmark instead")
    b.add_argument("--full", action="store_true", help="the whole grid (slow); default: the sampled subset")
    b.add_argument("--size", choices=("tiny", "default", "full"), default=None, help=argparse_suppress())
    b.add_argument("--out-dir", default="benchmarks/results", help="where quality.json and the PNGs go")
    b.add_argument("--bm4d", action="store_true",
                   help="also run the BM4D baselines (optional bm4d package, non-commercial licence; slow)")
    b.add_argument("--textures", default="clean,target",
                   help="textures for the complete methods (the classical chain and models), comma-separated "
                        "(default: both)")
    b.add_argument("--no-heldout", action="store_true",
                   help="skip the held-out-physics column (the independent simulator's cases)")
    b.add_argument("--methods", default=None,
                   help="comma-separated method names (e.g. classical:classical,classical:mtf_ratio); default: all. "
                        "A name runs in every texture of --textures, NAME[target] in that texture only")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout (nothing else)")
    p.add_argument("--report", help="write a self-contained HTML report here")


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _sha256(path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _window(text: str):
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise BadInputError(f"--window must be LO,HI in HU (e.g. -1350,150), got {text!r}.") from None
    if not hi > lo:
        raise BadInputError(f"--window {text!r}: HI must exceed LO.")
    return lo, hi


def _read_mask(path, target):
    import numpy as np
    import SimpleITK as sitk

    from ..io.read import read_image

    arr = sitk.GetArrayFromImage(read_image(path))
    if arr.shape != target.shape:
        raise BadInputError(f"{path} has shape {arr.shape}, but the target has {target.shape}; "
                            "masks and labelmaps must be on the target's grid.")
    return np.asarray(arr)


def run(args) -> int:
    if args.benchmark:
        return _run_benchmark(args)
    if not args.target or not (args.source or args.output):
        raise BadInputError("Give --target and at least --source or --output (files mode), or --benchmark.")
    return _run_files(args)


def _run_files(args) -> int:
    from ..io.outputs import OutputGuard

    paths = {"target": args.target, "source": args.source, "output": args.output, "replicate": args.replicate}
    guard = OutputGuard(inputs=[*paths.values(), args.segments, args.lung_mask, args.lpips_weights])
    if args.report:
        guard.add(args.report, what="--report")
    if args.out:
        guard.add(args.out, what="--out")
    guard.check()
    with guard:
        _evaluate_files(args, paths, guard)
    return 0


def _evaluate_files(args, paths: dict, guard):
    from ..cli.events import dumps
    from ..evaluate.figures import pair_figures
    from ..evaluate.paired import evaluate_pair
    from ..evaluate.report import pair_report_html, versions, write_html
    from ..io import read_volume
    from ..io.jsonfile import write_json

    vols = {k: read_volume(v) if v else None for k, v in paths.items()}
    target = vols["target"]
    lung = _read_mask(args.lung_mask, target) > 0 if args.lung_mask else None
    seg = _read_mask(args.segments, target) if args.segments else None
    res = evaluate_pair(target, vols["source"], vols["output"], vols["replicate"], window=_window(args.window),
                        threshold=args.threshold, lung=lung, segments=seg, lpips_weights=args.lpips_weights,
                        keep_arrays=bool(args.report))
    prov = {"inputs": {k: str(Path(v).resolve()) for k, v in paths.items() if v},
            "sha256": {k: _sha256(v) for k, v in paths.items() if v},
            "method": args.method,
            "model_sha256": args.model_sha256,
            "source_protocol": args.source_protocol, "target_protocol": args.target_protocol}
    for key in ("source_protocol", "target_protocol"):
        if prov[key]:
            from ..protocols import resolve_protocol

            prov[key] = f"{prov[key]} ({resolve_protocol(prov[key]).spec()})" if "=" not in prov[key] else \
                resolve_protocol(prov[key]).spec()
    res["provenance"] = {**prov, "versions": versions()}
    arrays = res.pop("arrays", None)
    if args.report:
        res["arrays"] = arrays
        figs = pair_figures(res)
        res.pop("arrays")
        flat = {**{k: v for k, v in prov.items() if k not in ("inputs", "sha256")},
                **{f"{k} file": v for k, v in prov["inputs"].items()},
                **{f"{k} sha256": v for k, v in prov["sha256"].items()}}
        write_html(guard.stage(args.report), pair_report_html(res, figs, flat))
    if args.out:
        write_json(guard.stage(args.out), res, indent=1)
    guard.commit()
    if args.json:
        sys.stdout.write(dumps(res) + "\n")
    else:
        _print_table(res["table"], sys.stdout)
        print(f"LPIPS: {res['lpips_note']}")
        if args.report:
            print(f"report: {args.report}")


def _print_table(table: dict, fh):
    def f(v):
        return "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    fh.write(f"{'metric':<22}{'source':>11}{'output':>11}{'replicate':>11}{'gap closed':>12}\n")
    for name, r in table.items():
        fh.write(f"{name:<22}{f(r['source']):>11}{f(r['output']):>11}{f(r['replicate']):>11}"
                 f"{f(r['gap_closed']):>12}\n")


def _run_benchmark(args) -> int:
    from ..cli.events import EventStream, cancel_on_signals, default_progress_mode, dumps
    from ..benchmark_methods import default_methods
    from ..evaluate import benchmark

    size = args.size or ("full" if args.full else "default")
    methods = default_methods(tuple(t.strip() for t in (args.textures or "clean").split(",") if t.strip()))
    if args.bm4d:
        from ..benchmark_methods import bm4d_methods
        from ..evaluate.bm4d_baseline import available

        if not available():
            raise BadInputError("--bm4d needs the optional bm4d package: pip install bm4d (non-commercial licence).")
        methods += bm4d_methods()
    if args.methods:
        from ..benchmark_methods import select_methods

        methods = select_methods(methods, args.methods)
    from ..io.outputs import OutputGuard

    guard = OutputGuard(inputs=[args.lpips_weights])
    guard.add(args.out_dir, kind="dir", what="--out-dir")
    if args.report:
        guard.add(args.report, what="--report")
    guard.check()
    events = EventStream("none" if args.json else default_progress_mode(), steps=1)
    events.started("benchmark")
    with cancel_on_signals(), guard:
        res = benchmark.run_benchmark(size, methods, progress=events.callback(), lpips_weights=args.lpips_weights,
                                      heldout=not args.no_heldout)
        written = benchmark.write_benchmark(res, args.out_dir, guard.stage(args.report) if args.report else None)
        guard.commit()
        if written["report"]:
            written["report"] = str(args.report)
    events.done(written["json"], {})
    if args.json:
        sys.stdout.write(dumps({k: v for k, v in res.items() if not k.startswith("_")}) + "\n")
    else:
        print(benchmark.format_table(res))
        print(f"\n{len(res['runs'])} runs in {res['elapsed_s']} s; JSON: {written['json']}")
        if written["report"]:
            print(f"report: {written['report']}")
    return 0
