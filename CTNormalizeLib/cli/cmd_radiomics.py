"""``ctnormalize radiomics --image NAME=CT ... --segments SEG``: pyradiomics per segment and image."""

from __future__ import annotations

import sys
from pathlib import Path

from .events import dumps

NAME = "radiomics"
HELP = "pyradiomics features of every segment on one or several images, with a comparison"
ORDER = 56
DESCRIPTION = (
    "Extract pyradiomics features of every segment of a labelmap (each nonzero value is a segment) "
    "or a Slicer .seg.nrrd, on each --image with the same settings (default: the CT preset, bin width "
    "25 HU, 1 mm isotropic). Prints each image's features as a % of the first's, "
    "writes the tidy table to -o OUT.csv and the comparison (differences and %) to OUT_comparison.csv."
)


def add_arguments(p):
    p.add_argument("--image", action="append", required=True, metavar="NAME=CT",
                   help="a named image, e.g. original=ct.nrrd (repeat; the first is the reference)")
    p.add_argument("--segments", required=True, metavar="SEG", help="labelmap (NRRD/NIfTI) or Slicer .seg.nrrd")
    p.add_argument("--params", default=None, metavar="YAML", help="pyradiomics params file (default: CT preset)")
    p.add_argument("--filters", action="store_true", help="use the CT preset with LoG and wavelet images")
    p.add_argument("--json", action="store_true", help="print one JSON object (features, comparison, provenance)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.csv", help="tidy CSV (+ OUT_comparison.csv)")


def parse_images(specs) -> dict:
    from ..errors import BadInputError

    images: dict = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise BadInputError(f"--image takes NAME=PATH, got {spec!r}.")
        if name in images:
            raise BadInputError(f"Image name {name!r} is given twice.")
        if not Path(path).exists():
            raise BadInputError(f"Input file not found: {path}")
        images[name] = path
    return images


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.5g}"


def run(args) -> int:
    from ..errors import BadInputError
    from ..io.outputs import OutputGuard
    from ..quantify.radiomics import comparison_path, default_params_path, extract_radiomics

    images = parse_images(args.image)
    if args.params and args.filters:
        raise BadInputError("Give either --params or --filters, not both.")
    params = args.params or (default_params_path(filters=True) if args.filters else None)
    guard = OutputGuard(inputs=[*images.values(), args.segments, args.params])
    outputs = []
    if args.output:
        out = guard.add(args.output, what="-o")
        outputs = [out, guard.add(comparison_path(out), what="-o (its _comparison.csv)")]
    guard.check()
    written = None
    with guard:
        result = extract_radiomics(images, args.segments, params=params)
        if outputs:
            staged = [guard.stage(p) for p in outputs]
            result.write_csv(staged[0])
            written = [str(p.resolve()) for p in guard.commit()]
    if args.json:
        from ..contracts.results import RadiomicsReport

        report = RadiomicsReport.from_dict({**result.to_dict(), "outputs": written})
        sys.stdout.write(dumps(report.to_dict()) + "\n")
        return 0
    for w in result.warnings:
        print(f"warning [{w['code']}]: {w['message']}", file=sys.stderr)
    names = result.image_names
    cols = ["segment", "feature"] + names + [f"%{n}" for n in names[1:]]
    rows = [[w["segment"], w["feature"]] + [_fmt(w.get(n)) for n in names]
            + [_fmt(w.get(f"{n}_pct_vs_{names[0]}")) for n in names[1:]] for w in result.wide()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(wd) for c, wd in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.ljust(wd) for v, wd in zip(r, widths)))
    prov = result.provenance
    print(f"\nparams: {prov['params_path']}  pyradiomics {prov['pyradiomics_version']}  "
          f"engine {prov['engine_version']}")
    if written:
        print("wrote: " + ", ".join(written))
    return 0
