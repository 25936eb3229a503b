"""``ctnormalize characterize MANIFEST|DIR -o report.html``: what a cohort looks like, before normalizing."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from ..errors import BadInputError
from .batch_events import CaseProgress, cases_text, exit_code, summarize
from .events import EventStream, default_progress_mode, run_with_events

NAME = "characterize"
HELP = "cohort report before normalization: scanners, kernels (tags and pixels), thickness, noise, NPS"
ORDER = 16
DESCRIPTION = (
    "Read every case of a manifest CSV (case,input[,group,...]) or every CT under a folder and write one "
    "self-contained HTML page: scanners, kernels from the tags and from the pixels, slice thicknesses, noise "
    "sigma, NPS and MTF50 per scanner/kernel group, with the spread between groups. Headers and the measured "
    "image-quality signature only, no normalization. Runs on Dask like 'batch'."
)


def add_arguments(p):
    p.add_argument("cohort", help="manifest CSV or a folder of CTs (volume files and DICOM series)")
    p.add_argument("-o", "--output", required=True, metavar="report.html", help="the HTML page to write")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: cores)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask scheduler")
    p.add_argument("--no-edge", action="store_true", help="skip the edge-MTF cross-check of the signature (faster)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="also write the per-case figures as JSON")
    p.add_argument("--progress", choices=("json", "bar", "none"), default=None,
                   help="json: JSON lines on stdout; bar: a progress bar over cases (default on a terminal)")


def run(args) -> int:
    mode = args.progress or default_progress_mode()
    return run_with_events(EventStream(mode), lambda guard: _run(args, mode, guard))


def _run(args, mode: str, guard) -> int:
    from ..cohort.batch import run_cases
    from ..cohort.characterize import characterize_case
    from ..cohort.manifest import load_cases
    from ..cohort.report import write_cohort_html
    from .cmd_batch import local_workers
    from .events import dumps

    from ..io.outputs import check_html_name

    check_html_name(args.output)
    cases = load_cases(args.cohort)
    # The report and the JSON are checked against the manifest and every case before any case is read,
    # and published together at the end (a cancel before that leaves both as they were). A cohort folder
    # itself may hold the report: only its CTs are read.
    manifest = None if Path(args.cohort).is_dir() else args.cohort
    guard.add_inputs([manifest] + [c.input for c in cases])
    guard.add(args.output, what="-o")
    if args.json:
        guard.add(args.json, what="--json")
    guard.check()
    workers = None if args.scheduler else local_workers(args, len(cases))
    progress = CaseProgress(mode)
    try:
        records = run_cases(cases, functools.partial(characterize_case, edge=not args.no_edge), workers=workers,
                            scheduler=args.scheduler, on_event=progress)
    finally:
        progress.close()
    from .. import cancellation
    from ..io.atomic import atomic_write_text

    info = {"cohort": str(Path(args.cohort).resolve()), "workers": args.scheduler or workers}
    cancellation.check()
    write_cohort_html(guard.stage(args.output), records, after=False, settings=info)
    written = [args.output]
    if args.json:
        atomic_write_text(guard.stage(args.json), dumps({"cases": records}) + "\n")
        written.append(args.json)
    cancellation.check()
    guard.commit()
    summary = summarize(records)
    if mode == "json":
        sys.stdout.write(dumps({"event": "done", "output": str(Path(args.output).resolve()), "summary": summary})
                         + "\n")
    else:
        print(f"{cases_text(summary['cases'])}: {summary['done']} measured, {summary['failed']} failed. "
              f"Wrote {', '.join(written)}")
    return exit_code(records)
