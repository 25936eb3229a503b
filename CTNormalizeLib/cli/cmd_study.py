"""``ctnormalize study``: create, check and analyze blinded reader studies."""

from __future__ import annotations

import sys

from ..errors import BadInputError
from ..io.outputs import OutputGuard, check_html_name

NAME = "study"
HELP = "blinded reader studies: create from a manifest, show progress, analyze answers"
DESCRIPTION = (
    "Blinded reader studies. 'create' builds a study folder (study.json, blinded items/, "
    "key.json) from a CSV manifest; readers read it in Slicer (module 'CTNormalize Reader Study'); "
    "'status' shows each reader's progress; 'analyze' writes an HTML report (and JSON with --json)."
)
ORDER = 80


def add_arguments(parser):
    sub = parser.add_subparsers(dest="study_command", metavar="ACTION")
    c = sub.add_parser("create", help="create a blinded study from a CSV manifest")
    c.add_argument("--manifest", required=True, help="CSV: case id, then one column per variant (paths)")
    c.add_argument("--design", required=True, choices=("single", "pair", "protocol"))
    c.add_argument("--seed", type=int, required=True, help="random seed (same seed, same study)")
    c.add_argument("--per-reader", action="store_true", help="randomize per reader (needs --readers)")
    c.add_argument("--readers", default="", help="comma-separated reader names (per-reader studies)")
    c.add_argument("--variants", default="", help="comma-separated variants to show (default depends on design)")
    c.add_argument("--reference", default="original", help="name of the original variant (default: original)")
    c.add_argument("--key", default=None, help="write the key here instead of DIR/key.json (keep it from readers)")
    c.add_argument("--title", default="", help="title shown to readers (must not reveal the truth)")
    c.add_argument("--no-crop", action="store_true",
                   help="keep each image's extent (default: crop the variants of a case to their common "
                        "extent when they share a voxel grid, so the slice count reveals nothing)")
    c.add_argument("-o", "--output", required=True, help="new study folder")
    c.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    s = sub.add_parser("status", help="progress of each reader")
    s.add_argument("study_dir")
    s.add_argument("--json", action="store_true")

    a = sub.add_parser("analyze", help="analyze the answers into an HTML report")
    a.add_argument("study_dir")
    a.add_argument("-o", "--output", default=None, help="HTML report path")
    a.add_argument("--key", default=None, help="key file (default: STUDY_DIR/key.json)")
    a.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    a.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def _create_inputs(manifest) -> list:
    """The manifest and every image it names (no output may be one of them)."""
    from ..readerstudy.manifest import read_manifest

    cases, _ = read_manifest(manifest)
    return [manifest] + [p for c in cases for p in c["images"].values()]


def _analyze_guard(args):
    """Outputs of ``analyze`` must not touch the study: its files, answers, items or key."""
    from pathlib import Path

    from ..readerstudy import storage as S

    study = Path(args.study_dir)
    key = Path(args.key) if args.key else study / S.KEY_FILE
    guard = OutputGuard(inputs=[study / S.STUDY_FILE, key] + _study_sources(key),
                        protected=[study / S.ANSWERS_DIR, study / S.ITEMS_DIR, key])
    if args.output:
        check_html_name(args.output)
        guard.add(args.output, what="-o")
    guard.check()
    return guard


def _study_sources(key_path) -> list:
    """The manifest and the scans a study was made from: those its key records, and every scan its
    manifest names while the manifest is there (none for an unreadable key: analyze reports that)."""
    import csv

    from ..errors import CTNormalizeError
    from ..readerstudy.storage import load_key

    try:
        key = load_key(None, key_path)
        images = key.get("images") or {}
        sources = [key.get("manifest")] + [t.get("source") for t in images.values() if isinstance(t, dict)]
    except (CTNormalizeError, AttributeError):
        return []
    try:
        sources += _create_inputs(key["manifest"]) if key.get("manifest") else []
    except (CTNormalizeError, OSError, ValueError, csv.Error):
        pass  # a manifest moved or edited since: the key's own list stands
    return sources


def _key_outside_readers_folders(key, study_dir) -> None:
    """The key unblinds the study: it must not lie where readers look (the study's items and answers)."""
    import os
    from pathlib import Path

    from ..readerstudy import storage as S

    real = Path(os.path.realpath(os.path.expanduser(str(key))))
    for folder in (S.ITEMS_DIR, S.ANSWERS_DIR):
        seen = Path(os.path.realpath(os.path.expanduser(str(Path(study_dir) / folder))))
        if real == seen or seen in real.parents:
            raise BadInputError(f"The --key path {key} lies in the study's {folder}/ folder, which readers see; "
                                "keep the key outside the study folder, or at its top (the default).")


def _no_key_there(key) -> None:
    """Refuse a ``--key`` path that holds a file: it is the only record of some study's truth (a second
    study created with the same --key replaced the first one's, which then could not be analyzed)."""
    import os

    if os.path.lexists(os.path.expanduser(str(key))):
        raise BadInputError(f"The --key file {key} exists: it may be another study's key, the only record of its "
                            "truth, and is never replaced. Give a new path, or move that file away first.")


def _split(text):
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def run(args) -> int:
    from ..readerstudy import analysis, create
    from .events import dumps

    cmd = getattr(args, "study_command", None)
    if cmd == "create":
        guard = OutputGuard(inputs=_create_inputs(args.manifest))
        guard.add(args.output, kind="dir", what="-o")
        if args.key:
            _key_outside_readers_folders(args.key, args.output)
            guard.add(args.key, what="--key")
        guard.check()
        if args.key:
            _no_key_there(args.key)  # after the guard: a key named like an input is refused as one
        summary = create.create_study(
            args.manifest, args.output, args.design, args.seed, per_reader=args.per_reader,
            readers=_split(args.readers), variants=_split(args.variants) or None,
            reference=args.reference, key_path=args.key, title=args.title,
            crop=not args.no_crop)
        if args.json:
            print(dumps(summary))
        else:
            print(f"Created {summary['design']} study in {summary['study_dir']}: {summary['n_cases']} cases, "
                  f"{summary['n_items']} items, {summary['n_images']} blinded images "
                  f"(variants {', '.join(summary['variants'])}, randomized {summary['randomization']}"
                  f"{', ' + str(summary['n_cases_cropped']) + ' cases cropped to a common extent' if summary['n_cases_cropped'] else ''}).")
            print(f"Key: {summary['key']} (keep it away from readers).")
        for w in summary["warnings"]:
            print(f"warning [{w['code']}]: {w['message']}", file=sys.stderr)
        return 0
    if cmd == "status":
        st = analysis.study_status(args.study_dir)
        if args.json:
            print(dumps(st))
            return 0
        total = st["n_items"]
        print(f"{st['design']} study, {st['n_cases']} cases, randomized {st['randomization']}"
              + (f", {total} items per reader" if total else ""))
        if not st["readers"]:
            print("No answers yet.")
        for name, r in st["readers"].items():
            print(f"  {name}: {r['answered']}/{r['total'] if r['total'] is not None else '?'} answered, "
                  f"{r['revisions']} revisions, last {r['last_answer'] or '-'}"
                  f"{' (complete)' if r['complete'] else ''}"
                  + (f", {r['invalid_lines']} answer lines skipped" if r.get("invalid_lines") else ""))
        for p in st.get("problems", []):
            print(f"warning: skipped {p}", file=sys.stderr)
        return 0
    if cmd == "analyze":
        if not args.output and not args.json:
            raise BadInputError("Give -o report.html and/or --json.")
        guard = _analyze_guard(args)
        with guard:
            result = analysis.analyze_study(args.study_dir, key_path=args.key, seed=args.seed)
            if args.output:
                from ..readerstudy.report import write_report

                write_report(result, guard.stage(args.output))
                guard.commit()
                if not args.json:
                    print(f"Wrote {args.output}")
        if args.json:
            print(dumps(result))
        for w in result["warnings"]:
            print(f"warning [{w['code']}]: {w['message']}", file=sys.stderr)
        return 0
    raise BadInputError("Give an action: ctnormalize study create|status|analyze (see --help).")
