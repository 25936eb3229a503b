"""``ctnormalize demo -o DIR``: the embedded default, nothing downloaded.

A held-out phantom (seed >= 1000) is scanned three times by the simulator: a sharp-kernel,
25 %-dose, 2 mm source; a smooth, full-dose, 1 mm target; and a replicate of the target
(same anatomy, independent noise: the physical floor). The source is normalized with the
best available method; the table shows L1 HU against the target for source, output and
replicate, and a PNG shows the three planes in a lung window.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

NAME = "demo"
HELP = "simulate a sharp/low-dose/2 mm scan of a phantom and normalize it (no download)"
ORDER = 90

SOURCE = "kernel=sharp,dose=0.25,thickness=2"
TARGET = "emphysema-reference"  # smooth, full dose, 1 mm


def add_arguments(p):
    p.add_argument("-o", "--output", required=True, help="output folder (created)")
    p.add_argument("--seed", type=int, default=1234, help="phantom seed (>= 1000: held out from training)")
    p.add_argument("--method", default="auto", help="normalization method (default: best available)")
    p.add_argument("--shape", default="200,192,192", help="phantom truth shape z,y,x (0.5 mm z spacing: 100 mm of chest)")
    p.add_argument("--json", action="store_true", help="print the result table as JSON")


def run(args) -> int:
    from ..errors import BadInputError
    from ..evaluate.figures import views_figure
    from ..evaluate.grid import to_target_grid
    from ..evaluate.metrics import l1_hu
    from ..io import write_volume
    from ..io.atomic import atomic_output, atomic_write_text
    from ..methods import get_method
    from ..normalization import normalize
    from ..protocols import resolve_protocol
    from ..simulate import make_phantom, simulate_pair
    from .events import dumps

    try:
        shape = tuple(int(s) for s in args.shape.split(","))
        assert len(shape) == 3
    except (ValueError, AssertionError):
        raise BadInputError(f"--shape must be three integers z,y,x, got {args.shape!r}") from None
    from ..io.outputs import OutputGuard

    out = Path(args.output)
    guard = OutputGuard()
    guard.add(out, kind="dir", what="-o")
    guard.check()  # before the minutes of work: a folder we can write in
    out.mkdir(parents=True, exist_ok=True)

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    say(f"[demo] phantom seed {args.seed}, shape {shape}")
    ph = make_phantom(args.seed, shape=shape)
    source_p, target_p = resolve_protocol(SOURCE), resolve_protocol(TARGET)
    say(f"[demo] simulating source {source_p.spec()}, target {target_p.spec()} and a replicate")
    src, tgt, rep = simulate_pair(ph.volume, source_p, target_p, seed=args.seed)
    t_sim = time.perf_counter() - t0

    say(f"[demo] normalizing with method={args.method}")
    t1 = time.perf_counter()
    outcome = normalize(src, source_p, target_p, method=args.method)
    t_norm = time.perf_counter() - t1
    for w in outcome.warnings:
        say(f"[demo] note [{w['code']}]: {w['message']}")
    classical = None
    say(f"[demo] method {outcome.plan.method}: {outcome.plan.method_reason}")
    say(f"[demo] {outcome.plan.noise_summary()}")
    if get_method(outcome.plan.method).kind == "model":
        # Show the classical chain beside the model, so the table says whether the model helps.
        say("[demo] normalizing with the classical chain too, for comparison")
        classical = normalize(src, source_p, target_p, method="classical")

    # Compare on the target's grid: the 2 mm source is interpolated along z onto it.
    masks = ph.volume.with_array(ph.masks["body"] + 2.0 * ph.masks["lungs"])
    extra = [classical.volume] if classical is not None else []
    tgt_c, (src_c, out_c, rep_c, mask_c, *cls_c), _ = to_target_grid(tgt, src, outcome.volume, rep, masks, *extra)
    body = mask_c.hu > 0.5
    lungs = mask_c.hu > 2.5
    rows = {
        "source (interpolated to the target grid)": l1_hu(src_c.hu, tgt_c.hu, body),
        f"normalized ({outcome.plan.method})": l1_hu(out_c.hu, tgt_c.hu, body),
    }
    if classical is not None:
        rows[f"  for comparison: {classical.plan.method}"] = l1_hu(cls_c[0].hu, tgt_c.hu, body)
    rows["replicate (floor)"] = l1_hu(rep_c.hu, tgt_c.hu, body)
    vals = list(rows.values())
    gap = (vals[0] - vals[1]) / (vals[0] - vals[-1]) if vals[0] - vals[-1] > 1e-6 else float("nan")

    for name, vol in (("source", src), ("target", tgt), ("replicate", rep), ("normalized", outcome.volume)):
        write_volume(vol, out / f"{name}.nrrd")
    png = out / "demo.png"
    panels = {f"source\n{source_p.spec()}": src_c.hu, f"normalized\n{outcome.plan.method}": out_c.hu,
              f"target\n{target_p.spec()}": tgt_c.hu}
    with atomic_output(png) as tmp:
        Path(tmp).write_bytes(views_figure(panels, tgt_c.spacing, window=(-1350.0, 150.0), mask=lungs,
                                           title="CTNormalize demo, lung window W1500/L-600"))
    result = {
        "seed": args.seed,
        "source": source_p.spec(),
        "target": target_p.spec(),
        "method": outcome.plan.method,
        "l1_hu_in_body_vs_target": rows,
        "gap_closed": gap,
        "timings_s": {"simulate": round(t_sim, 1), "normalize": round(t_norm, 1),
                      "total": round(time.perf_counter() - t0, 1)},
        "files": sorted(p.name for p in out.iterdir()),
    }
    atomic_write_text(out / "demo.json", dumps(result) + "\n")
    if args.json:
        print(dumps(result))
    else:
        print(f"\nL1 HU in the body vs the target ({target_p.spec()}), phantom seed {args.seed}:")
        for name, v in rows.items():
            print(f"  {name:<52s} {v:7.1f}")
        print(f"  gap closed by {outcome.plan.method}: {100 * gap:.0f} %   (0 % = source, 100 % = replicate floor)")
        print(f"\nWrote {out}/: source, target, replicate, normalized (.nrrd), demo.png, demo.json "
              f"in {result['timings_s']['total']:.0f} s")
    return 0
