"""``ctnormalize simulate``: a phantom or a real CT scanned with a protocol (+ replicate)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import BadInputError
from .events import EventStream, default_progress_mode, dumps, run_with_events

NAME = "simulate"
HELP = "simulate a protocol (kernel, dose, thickness) on a chest phantom or a high-quality CT"
ORDER = 40
DESCRIPTION = (
    "Simulate acquiring a volume with a protocol: forward projection, Poisson + electronic noise, "
    "FBP with the kernel class's apodization, slice-sensitivity profile. The volume is a seeded "
    "chest phantom (--phantom SEED; its truth and masks are written too) or a thin-slice CT "
    "(--from CT; a simulated slice cannot be thinner than the input's). Writes scan.nrrd "
    "(+ replicate.nrrd with --replicate: same anatomy, independent noise), truth.nrrd and "
    "mask_*.nrrd for phantoms, and settings.json into the output folder."
)


def _triple(text: str, kind=float):
    try:
        vals = tuple(kind(v) for v in str(text).split(","))
    except ValueError:
        raise BadInputError(f"Expected three comma-separated numbers (z,y,x), got {text!r}.") from None
    if len(vals) != 3 or min(vals) <= 0:
        raise BadInputError(f"Expected three positive numbers (z,y,x), got {text!r}.")
    return vals


def add_arguments(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--phantom", type=int, metavar="SEED", help="generate a chest phantom with this seed")
    src.add_argument("--from", dest="from_ct", metavar="CT", help="high-quality CT to simulate from (never modified)")
    p.add_argument("--protocol", required=True, help="spec (kernel=sharp,dose=0.25,thickness=2) or preset name")
    p.add_argument("--replicate", action="store_true", help="also write a replicate (same protocol, new noise)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--shape", default="96,192,192", help="phantom shape z,y,x (default 96,192,192)")
    p.add_argument("--spacing", default="0.5,0.8,0.8", help="phantom spacing z,y,x in mm (default 0.5,0.8,0.8)")
    p.add_argument("--emphysema", type=float, default=None,
                   help="phantom emphysema fraction of lung (0..0.6); default drawn from the seed")
    p.add_argument("--nodules", type=int, default=None, help="number of phantom nodules; default drawn from the seed")
    p.add_argument("--clamp-thickness", action="store_true",
                   help="with --from: raise a too-thin requested thickness to the input's instead of failing")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument("--progress", choices=("json", "bar", "none"), default=None,
                   help="json: JSON lines on stdout; bar: a progress bar (default on a terminal)")


def run(args) -> int:
    events = EventStream(args.progress or default_progress_mode(), steps=3)
    return run_with_events(events, lambda guard: _run(args, events, guard),
                           oom_hint="Try a smaller volume.")


def _run(args, events: EventStream, guard) -> int:
    import numpy as np

    from ..io import read_volume, write_volume
    from ..io.atomic import atomic_write_text
    from ..protocols import resolve_protocol
    from ..simulate import derive_seeds, make_phantom, project_truth, simulate_scan
    from ..volume import Volume

    out = Path(args.output).expanduser()
    if out.exists() and not out.is_dir():
        raise BadInputError(f"Output {out} exists and is not a folder.")
    protocol = resolve_protocol(args.protocol)
    guard.add_inputs([args.from_ct])
    names = ["scan.nrrd", "settings.json"] + (["replicate.nrrd"] if args.replicate else []) + \
        (["truth.nrrd", "nodule_labels.nrrd"] if args.phantom is not None else [])
    for name in names:
        guard.add(out / name, what="-o")
    guard.check()
    events.started(method="simulate", device="cpu", protocol=protocol.spec())
    t0 = time.perf_counter()
    timings = {}

    phantom = None
    if args.phantom is not None:
        events.progress("phantom", 0.0, step=1, force=True)
        phantom = make_phantom(args.phantom, shape=_triple(args.shape, int), spacing=_triple(args.spacing),
                               emphysema=args.emphysema, nodules=args.nodules,
                               progress=lambda s, f: events.progress(s, 0.1 * f, step=1))
        truth = phantom.volume
    else:
        truth = read_volume(args.from_ct)
        for w in truth.meta.get("warnings", []):
            events.warning(w.get("code", "INPUT"), w.get("message", str(w)))
    timings["truth_s"] = round(time.perf_counter() - t0, 3)

    n_scans = 2 if args.replicate else 1
    seeds = derive_seeds(args.seed, 2)[:n_scans]

    def stage(lo, hi):
        return lambda s, f: events.progress(s, lo + (hi - lo) * f, step=2)

    t = time.perf_counter()
    proj = project_truth(truth, progress=stage(0.1, 0.4))
    on_thin = "clamp" if args.clamp_thickness else "error"
    scans = []
    for i, s in enumerate(seeds):
        lo = 0.4 + 0.45 * i / n_scans
        scans.append(simulate_scan(truth, protocol, s, progress=stage(lo, lo + 0.45 / n_scans),
                                   projections=proj, on_thin=on_thin))
    timings["simulate_s"] = round(time.perf_counter() - t, 3)

    events.progress("write", 0.88, step=3, force=True)
    t = time.perf_counter()

    def write(vol: Volume, name: str, dtype="float32"):
        path = out / name
        vol = Volume(vol.hu, vol.spacing, vol.origin, vol.direction,
                     {k: v for k, v in vol.meta.items() if isinstance(v, str)})
        write_volume(vol, guard.stage(path), dtype=dtype, write_tags=True)
        return str(path.resolve())

    def write_label(arr, name: str):
        from ..io.write import volume_to_image, write_image

        path = out / name
        if name not in names:
            guard.add(path, what="-o")
        image = volume_to_image(Volume(arr, truth.spacing, truth.origin, truth.direction), dtype=np.uint8)
        write_image(image, guard.stage(path), compress=True)
        return str(path.resolve())

    files = {"scan": write(scans[0], "scan.nrrd")}
    if args.replicate:
        files["replicate"] = write(scans[1], "replicate.nrrd")
    if phantom is not None:
        files["truth"] = write(truth, "truth.nrrd")
        for name, mask in phantom.masks.items():
            files[f"mask_{name}"] = write_label(mask, f"mask_{name}.nrrd")
        files["nodule_labels"] = write_label(phantom.nodule_labels, "nodule_labels.nrrd")
    settings = {
        "command": "simulate",
        "source": {"phantom_seed": args.phantom} if phantom is not None else {"from": str(Path(args.from_ct).resolve())},
        "protocol": protocol.spec(),
        "seed": args.seed,
        "scan_seeds": seeds,
        "simulation": scans[0].meta["simulation"],
        "phantom": phantom.info if phantom is not None else None,
        "files": files,
    }
    timings["write_s"] = round(time.perf_counter() - t, 3)
    settings["timings"] = timings
    settings_path = out / "settings.json"
    atomic_write_text(guard.stage(settings_path), dumps(settings) + "\n")
    guard.commit()
    events.progress("done", 1.0, step=3, force=True)
    events.done(str(out.resolve()), {"files": files, "timings": timings, "protocol": protocol.spec()})
    if events.mode != "json":
        print(f"wrote {len(files) + 1} files to {out}", file=sys.stderr)
    return 0
