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
    "Normalize a CT (NRRD, NIfTI, MHA or a DICOM series folder) to a target protocol, or to look like a "
    "reference scan (--target-like). The source's kernel and noise are measured from the pixels (DICOM tags "
    "are priors; --source overrides). With --progress json, stdout carries one JSON event per line (started, "
    "progress, warning, done, error) and nothing else. Exit codes: 0 ok, 2 bad input, 3 no model for the "
    "protocol pair, 4 resources exhausted (memory, disk), 130 cancelled, 141 stdout closed early, 1 internal error."
)

STEPS = ("read", "plan", "normalize", "write")
log = logging.getLogger(__name__)


def _method_help() -> str:
    from ..methods import method_table

    rows = method_table()
    return ("auto (the covering method with the best measured benchmark figures), or one of: "
            + "; ".join(f"{m.name} ({m.kind})" for m in rows.values()))


def add_arguments(p):
    from ..io.write import DEFAULT_OUTPUT_TYPE, OUTPUT_TYPES
    from ..plan import DEFAULT_TEXTURE, TEXTURES

    p.add_argument("input", help="input CT: file or DICOM series folder (never modified)")
    p.add_argument("-o", "--output", required=True,
                   help="output volume (.nrrd, .nii.gz, .nii, .mha), or a folder for a DICOM series")
    p.add_argument("--output-format", choices=("auto", "volume", "dicom"), default="auto",
                   help="dicom: a derived DICOM CT series in the folder -o; auto (default): DICOM when -o "
                        "is an existing folder or ends with '/', else a volume file")
    p.add_argument("--output-type", choices=OUTPUT_TYPES, default=DEFAULT_OUTPUT_TYPE,
                   help="volume files: int16 (default) stores whole HU as CT is stored, compressed except in .nii "
                        "(lung1: a quarter of float32's size; float32 if a value does not fit); float32 keeps full "
                        "precision (compressed only in .nii.gz). A DICOM series stores integers (whole HU when they fit int16)")
    p.add_argument("--source", default="auto",
                   help="source protocol overrides, e.g. kernel=B70f,dose=0.25,thickness=2; 'auto' (default) "
                        "measures the kernel and noise from the pixels with the DICOM tags as priors")
    target = p.add_argument_group("target (one of --target / --target-like)")
    target.add_argument("--target", default=None,
                        help="target preset name (see 'ctnormalize protocols') or spec, e.g. "
                             "kernel=smooth,dose=1,thickness=1 (fields left open stay as in the source), or a "
                             "preset with overrides, e.g. emphysema-reference,thickness=5")
    target.add_argument("--target-like", default=None, metavar="REF",
                        help="a reference CT: make the input look like this scan's protocol (its measured "
                             "kernel, noise and thickness); --target may then set thickness/spacing")
    p.add_argument("--method", default="auto", help=_method_help())
    p.add_argument("--texture", default=DEFAULT_TEXTURE, choices=TEXTURES,
                   help="clean: the best mean estimate (lowest error, for reading); target: with the target "
                        f"protocol's noise texture and level (for quantification and reader studies). Default {DEFAULT_TEXTURE}")
    p.add_argument("--kernel-from", default="pixels", choices=("pixels", "labels"),
                   help="pixels (default): the source kernel's MTF measured from the noise texture, tags and "
                        "--source as priors; labels: the nominal MTF of the given or tagged kernel class")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, gpu or mps (learned methods)")
    p.add_argument("--progress", choices=("json", "bar", "none"), default=None,
                   help="json: JSON lines on stdout (for Slicer); bar: a progress bar (default on a terminal)")
    p.add_argument("--series-uid", default=None, help="SeriesInstanceUID when the folder holds several series")
    p.add_argument("--reference", default=None, help="reference CT for --method histogram_match / frequency_decomposition "
                                                     "(histogram_match without one: the --target-like scan)")
    p.add_argument("--report", default=None, help="also write the run report (JSON) to this path")
    p.add_argument("--allow-missing-slices", action="store_true",
                   help="DICOM: interpolate over unreadable or missing slices (with a warning naming them) "
                        "instead of refusing the series")


def run(args) -> int:
    events = EventStream(args.progress or default_progress_mode(), steps=len(STEPS))
    return run_with_events(events, lambda guard: _run(args, events, guard),
                           oom_hint="Try a smaller volume or free memory.")


def _read_inputs(args, timings: dict):
    from ..io import read_volume
    from ..io.validate import validate_ct

    t = time.perf_counter()
    vol = read_volume(args.input, series_uid=args.series_uid, validate=False,
                      allow_missing_slices=args.allow_missing_slices)
    validate_ct(vol)
    reference = read_volume(args.reference) if args.reference else None
    like = None
    if args.target_like:
        try:
            like = read_volume(args.target_like, validate=False)
            validate_ct(like)
        except BadInputError as exc:  # say which file: the input's own errors read alike
            raise type(exc)(f"The reference scan (--target-like {args.target_like}): {exc.message}") from None
    timings["read_s"] = round(time.perf_counter() - t, 3)
    return vol, reference, like


def _run(args, events: EventStream, guard) -> int:
    from ..interruptible import call_interruptibly
    from ..io import write_volume
    from ..contracts.derivation import derivation_from_report
    from ..io.dicom_write import check_output_dir, output_is_dicom, write_derived_series
    from ..io.outputs import volume_nbytes
    from ..io.write import check_output_type, check_volume_path, header_loss_warning, output_type
    from ..methods import get_method
    from ..normalization import execute, method_reference
    from ..plan import make_plan

    dicom_out = output_is_dicom(args.output, args.output_format)
    check_output_type(args.output_type, dicom_out, "give a volume file as -o")
    guard.add_inputs([args.input, args.reference, args.target_like])
    out = guard.add(args.output, what="-o", kind="dir" if dicom_out else "file",
                    validate=None if dicom_out else check_volume_path)
    if dicom_out:
        check_output_dir(out, args.input)
    if args.report:
        guard.add(args.report, what="--report")
    guard.check()
    if args.target is None and args.target_like is None:
        raise BadInputError("Give a target: --target PRESET|SPEC or --target-like REFERENCE_SCAN.")
    timings: dict = {}
    vol, reference, like = _read_inputs(args, timings)
    guard.expect(out, volume_nbytes(vol.hu.size, out, 2 if dicom_out else 4))  # before planning; exact z below
    for w in vol.meta.get("warnings", []):
        events.warning(w.get("code", "INPUT"), w.get("message", str(w)))

    t = time.perf_counter()
    # In a worker thread: measuring the signature and importing torch for a model are long C calls.
    plan = call_interruptibly(make_plan, vol, args.source, args.target, target_like=like, method=args.method,
                              device=args.device, texture=args.texture, kernel_from=args.kernel_from)
    timings["plan_s"] = round(time.perf_counter() - t, 3)
    z_ratio = vol.spacing[0] / (plan.target.z_spacing or vol.spacing[0])
    guard.expect(out, volume_nbytes(vol.hu.size * z_ratio, out, 2 if dicom_out else 4))
    row = get_method(plan.method)
    if row.needs_torch:
        from ..inference import preload

        call_interruptibly(preload)
        check_cancelled()
    events.started(method=plan.method, device=plan.device, model_sha256=row.card.get("sha256"),
                   source=plan.source.spec(), target=plan.target.spec(), method_reason=plan.method_reason,
                   texture=plan.texture, noise=plan.noise_summary(), plan=plan.to_dict())
    for w in plan.warnings:
        events.warning(w.get("code", "WARNING"), w.get("message", ""))
    # read and plan ran before ``started`` (it carries the plan): both are reported done, so the steps
    # a client sees count 1, 2, 3, 4
    events.progress("read", 0.03, step=1, force=True)
    events.progress("plan", 0.05, step=2, force=True)

    def progress(stage, fraction):
        events.progress(stage, 0.05 + 0.85 * fraction, step=3)

    outcome = execute(plan, vol, progress=progress, reference=method_reference(plan.method, reference, like))
    for w in outcome.result.warnings:
        events.warning(w.get("code", "WARNING"), w.get("message", ""))

    check_cancelled()
    events.progress("write", 0.92, step=4, force=True)
    t = time.perf_counter()
    out_vol = outcome.volume
    run_report = outcome.report(str(Path(args.input).resolve()), str(Path(out).resolve()))
    derivation = derivation_from_report(run_report)
    if dicom_out:
        series = write_derived_series(out_vol, guard.stage(out), vol, derivation)
        for w in series.warnings:
            events.warning(w["code"], w["message"])
        dtype = "int16"  # a derived series always stores int16 (whole HU when they fit, else with a slope)
    else:
        dtype, warning = output_type(out_vol.hu, args.output_type)
        for w in (warning, header_loss_warning(out)):
            if w:
                events.warning(w["code"], w["message"])
        write_volume(out_vol, guard.stage(out), dtype=dtype, write_tags=True)  # the output's tags (Derivation.output_meta)
    timings["write_s"] = round(time.perf_counter() - t, 3)
    outcome.timings = {**timings, **outcome.timings}
    report = outcome.report(str(Path(args.input).resolve()), str(Path(out).resolve()), dtype).to_dict()
    if args.report:
        from ..io.atomic import atomic_write_text

        atomic_write_text(guard.stage(args.report), dumps(report) + "\n")
    check_cancelled()
    guard.commit()
    events.progress("done", 1.0, step=4, force=True)
    events.done(str(Path(out).resolve()), report)
    if events.mode != "json":
        if dicom_out:
            stored = "whole HU, DICOM" if series.rescale_slope == 1.0 else "DICOM, int16 with a rescale slope"
        else:
            stored = "whole HU, int16" if dtype == "int16" else "float32"
        texture = outcome.texture  # the output's: a method that keeps the noise (mtf_ratio) gives "source"
        print(f"Wrote {out} ({stored}; {plan.method}, {texture} texture; {plan.summary()}; "
              f"{plan.noise_summary()})")
        if plan.requested_method == "auto":
            print(f"  method {plan.method}: {plan.method_reason}")
    return 0
