"""``ctnormalize batch``: normalize a cohort on Dask distributed, with tables and a cohort report."""

from __future__ import annotations

import functools
import sys
import uuid
from pathlib import Path

from ..errors import BadInputError
from .batch_events import CaseProgress, cases_text, exit_code, summarize
from .events import EventStream, default_progress_mode, run_with_events

NAME = "batch"
HELP = "normalize a cohort (manifest CSV or folder) on Dask, resumable, with CSV tables and cohort.html"
ORDER = 15
DESCRIPTION = (
    "Normalize every case of a manifest (columns case,input and optionally source, segments, group and any "
    "others, which are kept) or every CT under --input-dir, one Dask task per case: on a LocalCluster of "
    "--workers processes, or on an existing cluster (--scheduler ADDRESS). Writes OUTDIR/cases/<case>/ "
    "(normalized output and record.json), OUTDIR/batch.csv (case,status,output,error,seconds,...), "
    "emphysema.csv and radiomics.csv (original and normalized side by side) and OUTDIR/cohort.html. A case "
    "done before with the same input, plan and engine version is skipped. A failed case never stops the "
    "others; the exit code is 0 when none failed, 2 when every failure was bad input, else 1."
)


def add_arguments(p):
    from ..io.write import DEFAULT_OUTPUT_TYPE, OUTPUT_TYPES

    p.add_argument("manifest", nargs="?", default=None, help="manifest CSV (case,input[,source,segments,group,...])")
    p.add_argument("--input-dir", default=None, metavar="DIR",
                   help="instead of a manifest: every CT under DIR (volume files and DICOM series)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--target", required=True, help="target preset or spec, as for normalize")
    p.add_argument("--source", default="auto", help="source spec for every case (a manifest 'source' column wins)")
    p.add_argument("--method", default="auto", help="auto, a classical method or a model name")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, gpu or mps (learned methods)")
    p.add_argument("--texture", default="clean", choices=("clean", "target"),
                   help="clean: the best mean estimate; target: with the target protocol's noise texture "
                        "(as normalize --texture)")
    p.add_argument("--output-format", choices=("nrrd", "nii.gz", "dicom"), default="nrrd",
                   help="normalized output per case: a NRRD or NIfTI file, or a derived DICOM series")
    p.add_argument("--output-type", choices=OUTPUT_TYPES, default=DEFAULT_OUTPUT_TYPE,
                   help="NRRD/NIfTI outputs: int16 (default) whole HU, compressed; float32 full precision "
                        "(as normalize --output-type; a DICOM series stores integers); the cohort's "
                        "measurements are of the values written")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="LocalCluster worker processes (default: the CPU cores, at most one per case)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="an existing Dask scheduler, e.g. tcp://head:8786 (a site cluster, dask-jobqueue, ...)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/SimpleITK threads per worker (default: cores / workers on a LocalCluster)")
    p.add_argument("--emphysema", action="store_true", help="emphysema index of the original and normalized scans")
    p.add_argument("--threshold", type=float, default=-950.0, help="LAA threshold in HU (default -950)")
    p.add_argument("--radiomics", action="store_true", help="pyradiomics on each case's segments, both images")
    p.add_argument("--segments-column", default="segments", metavar="NAME",
                   help="manifest column with each case's segments (default: segments)")
    p.add_argument("--radiomics-params", default=None, metavar="YAML", help="pyradiomics params (default: CT preset)")
    p.add_argument("--no-report", action="store_true", help="skip cohort.html")
    p.add_argument("--progress", choices=("json", "bar", "none"), default=None,
                   help="json: JSON lines on stdout; bar: a progress bar over cases (default on a terminal)")


def load_cases(args):
    """The cases from the manifest or ``--input-dir`` (exactly one of them)."""
    from ..cohort.manifest import find_inputs, read_manifest

    if bool(args.manifest) == bool(args.input_dir):
        raise BadInputError("Give a manifest CSV or --input-dir DIR (one of them).")
    if args.input_dir or Path(args.manifest).is_dir():
        return find_inputs(args.input_dir or args.manifest, exclude=[args.output], skip_case_outputs=True)
    return read_manifest(args.manifest, getattr(args, "segments_column", "segments"))


def local_workers(args, n_cases: int) -> int:
    if args.workers is not None:
        if args.workers < 1:
            raise BadInputError("--workers must be at least 1.")
        return args.workers
    from ..cohort.batch import usable_cores

    return max(1, min(usable_cores(), n_cases))


def _check_output(args, cases, out: Path) -> None:
    """The output folder is none of the cases' inputs, holds none and lies in none (a DICOM
    series), and can be written: checked before any case runs (io.outputs.OutputGuard)."""
    from ..io.outputs import OutputGuard

    guard = OutputGuard(inputs=[args.manifest, args.radiomics_params]
                        + [c.input for c in cases] + [getattr(c, "segments", None) for c in cases])
    guard.add(out, kind="dir", what="-o")
    guard.check()


def run(args) -> int:
    mode = args.progress or default_progress_mode()
    events = EventStream(mode)
    return run_with_events(events, lambda written: _run(args, mode), oom_hint="Use fewer --workers.")


def _run(args, mode: str) -> int:
    from ..io.write import check_output_type
    from ..protocols import resolve_protocol

    resolve_protocol(args.target)  # a bad target is one error now, not one per case
    cases = load_cases(args)
    if args.radiomics and not any(c.segments for c in cases):
        raise BadInputError(f"--radiomics needs segments: no case has a '{args.segments_column}' value.")
    if args.radiomics_params and not Path(args.radiomics_params).is_file():
        raise BadInputError(f"Radiomics params file not found: {args.radiomics_params}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"Output {out} is a file; give a folder.")
    check_output_type(args.output_type, args.output_format == "dicom", "choose --output-format nrrd / nii.gz")
    _check_output(args, cases, out)
    from ..io.atomic import make_parents, remove_empty

    created = make_parents(out)
    try:
        return _run_cases(args, mode, cases, out)
    except BaseException:
        remove_empty(created)  # a run that failed or was cancelled before any case wrote leaves no folder
        raise


def _run_cases(args, mode: str, cases: list, out: Path) -> int:
    from ..cohort.batch import default_threads, run_cases
    from ..cohort.case import BatchSettings, run_case
    from .. import cancellation
    from ..cohort.report import write_cohort_html
    from ..cohort.tables import write_tables
    from ..io.write import header_loss_warning
    from .events import dumps

    workers = None if args.scheduler else local_workers(args, len(cases))
    threads = args.threads or (None if args.scheduler else default_threads(workers))
    settings = BatchSettings(
        target=args.target, method=args.method, source=args.source, device=args.device,
        output_format=args.output_format, output_type=args.output_type, texture=args.texture,
        emphysema=args.emphysema, threshold=args.threshold,
        radiomics=args.radiomics,
        radiomics_params=str(Path(args.radiomics_params).resolve()) if args.radiomics_params else None,
        threads=threads)
    progress = CaseProgress(mode)
    try:
        task = functools.partial(run_case, settings=settings, outdir=str(out.resolve()), run_id=uuid.uuid4().hex)
        records = run_cases(cases, task, workers=workers, scheduler=args.scheduler, on_event=progress)
    finally:
        progress.close()
    # The cases are done: the tables and the report are written together, a cancel meanwhile only noted
    # (it would leave this run's tables next to an earlier run's report).
    with cancellation.publishing():
        written = {k: str(v) for k, v in write_tables(out, records).items()}
        if not args.no_report:
            info = {"target": args.target, "method": args.method, "source": args.source, "texture": args.texture,
                    "output format": args.output_format, "output type": args.output_type,
                    "workers": args.scheduler or workers, "threads per worker": threads}
            written["cohort"] = str(write_cohort_html(out / "cohort.html", records, after=True, settings=info))
    outputs = [r["output"] for r in records if r.get("output")]
    nifti = header_loss_warning(outputs[0]) if outputs else None
    if nifti:  # once for the cohort (its outputs share one format), not once per case
        EventStream(mode).warning(nifti["code"], nifti["message"])
    summary = summarize(records)
    if mode == "json":
        sys.stdout.write(dumps({"event": "done", "output": str(out.resolve()), "summary": summary,
                                "files": written}) + "\n")
    else:
        print(f"{cases_text(summary['cases'])}: {summary['done']} done, {summary['skipped']} skipped, "
              f"{summary['failed']} failed" + (f" ({', '.join(summary['failed_cases'])})" if summary["failed"] else "")
              + f". Wrote {', '.join(written.values())}")
    return exit_code(records)
