"""``ctnormalize normalize``: the background-process protocol of DESIGN.md section 4."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..errors import BadInputError
from .events import EventStream, check_cancelled, default_progress_mode, dumps, run_with_events

NAME = "normalize"
HELP = "translate a CT into how it would look under a target protocol"
ORDER = 10
DESCRIPTION = (
    "Normalize a CT (NRRD, NIfTI, MHA or a DICOM series folder) to a target protocol. "
    "With --progress json, stdout carries one JSON event per line (started, progress, "
    "warning, done, error) and nothing else. Exit codes: 0 ok, 2 bad input, 3 no model "
    "for the protocol pair, 4 out of memory, 130 cancelled, 1 internal error."
)

STEPS = ("read", "detect", "normalize", "write")
log = logging.getLogger(__name__)


def add_arguments(p):
    p.add_argument("input", help="input CT: file or DICOM series folder (never modified)")
    p.add_argument("-o", "--output", required=True, help="output volume (.nrrd, .nii.gz, .nii, .mha)")
    p.add_argument("--source", default="auto",
                   help="source protocol spec, e.g. kernel=B70f,dose=0.25,thickness=2; 'auto' detects "
                        "it from DICOM tags and image noise; fields you give override detection")
    p.add_argument("--target", required=True,
                   help="target preset name (see 'ctnormalize protocols') or spec, e.g. kernel=smooth,dose=1,thickness=1")
    p.add_argument("--method", default="auto", help="auto, a classical method or a model name")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--progress", choices=("json", "bar", "none"), default=None,
                   help="json: JSON lines on stdout (for Slicer); bar: a progress bar (default on a terminal)")
    p.add_argument("--series-uid", default=None, help="SeriesInstanceUID when the folder holds several series")
    p.add_argument("--reference", default=None, help="reference CT for --method histogram_match")
    p.add_argument("--report", default=None, help="also write the run report (JSON) to this path")


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def run(args) -> int:
    events = EventStream(args.progress or default_progress_mode(), steps=len(STEPS))
    return run_with_events(events, lambda written: _run(args, events, written),
                           oom_hint="Try a smaller volume or free memory.")


def _device_label(plan, device: str) -> str:
    """The device the run will use, as announced in ``started``."""
    if plan.kind != "model":
        return "cpu"
    from ..inference import resolve_device

    return str(resolve_device(device))


def _run(args, events: EventStream, written: list) -> int:
    from ..io import read_volume, write_volume
    from ..io.validate import validate_ct
    from ..normalize import complete_target, normalize, plan_method, resolve_source

    out = args.output
    if _same_file(args.input, out):
        raise BadInputError("The output path is the input path; CTNormalize never overwrites its input.")
    if not Path(out).parent.exists():
        raise BadInputError(f"Output folder does not exist: {Path(out).parent}")
    timings = {}
    t = time.perf_counter()
    vol = read_volume(args.input, series_uid=args.series_uid, validate=False)
    validate_ct(vol)
    reference = None
    if args.reference:
        reference = read_volume(args.reference)
    timings["read_s"] = round(time.perf_counter() - t, 3)
    for w in vol.meta.get("warnings", []):
        events.warning(w.get("code", "INPUT"), w.get("message", str(w)))

    source = resolve_source(vol, args.source)
    target = complete_target(source, args.target)
    plan = plan_method(source, target, args.method)
    if plan.kind == "model":
        from ..inference import preload

        preload()
        check_cancelled()
    events.started(method=plan.label, device=_device_label(plan, args.device),
                   model_sha256=plan.model_sha256, source=source.spec(), target=target.spec())
    events.progress("detect", 0.05, step=2, force=True)

    def progress(stage, fraction):
        events.progress(stage, 0.05 + 0.85 * fraction, step=3)

    outcome = normalize(vol, source, target, method=args.method, device=args.device,
                        progress=progress, reference=reference, plan=plan)
    for w in outcome.warnings:
        events.warning(w.get("code", "WARNING"), w.get("message", ""))

    check_cancelled()
    events.progress("write", 0.92, step=4, force=True)
    t = time.perf_counter()
    out_vol = outcome.volume
    out_vol.meta = {k: v for k, v in vol.meta.items() if k not in ("source_path", "warnings")}
    out_vol.meta["ctnormalize"] = f"{outcome.method} {outcome.source.spec()} -> {outcome.target.spec()}"
    write_volume(out_vol, out)
    written.append(out)
    timings["write_s"] = round(time.perf_counter() - t, 3)
    report = outcome.report()
    report["timings"] = {**timings, **report["timings"]}
    report["input"] = str(Path(args.input).resolve())
    if args.report:
        from ..io.atomic import atomic_write_text

        atomic_write_text(args.report, dumps(report) + "\n")
        written.append(args.report)
    check_cancelled()
    events.progress("done", 1.0, step=4, force=True)
    events.done(str(Path(out).resolve()), report)
    if events.mode != "json":
        print(f"Wrote {out} ({outcome.method}; {outcome.source.spec()} -> {outcome.target.spec()})")
    return 0
